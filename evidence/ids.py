"""Time-ordered identifiers (UUID version 7, RFC 9562) for audit events.

A random (version 4) primary key sends every insert to a random leaf of its index, so at
thousands of inserts per second the index's working set is the whole index and each first
touch of a page after a checkpoint writes the full page to the WAL. Version 7 ids start
with the millisecond, so inserts land at the right edge of the index. They stay UUIDs:
74 random bits (from ``os.urandom``) keep them unique and unguessable within a millisecond.
"""

import os
import time

_VERSION = 0x7 << 76
_VARIANT = 0b10 << 62
_LOW = (1 << 62) - 1


def uuid7_strs(count: int) -> list[str]:
    """``count`` ids (canonical text) from one clock reading and one read of ``os.urandom``."""
    head = (time.time_ns() // 1_000_000) << 80 | _VERSION | _VARIANT
    pool = os.urandom(10 * count)
    ids = []
    for n in range(count):
        rand = int.from_bytes(pool[10 * n : 10 * n + 10], "big")
        h = f"{head | ((rand >> 62) & 0xFFF) << 64 | (rand & _LOW):032x}"
        ids.append(f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}")
    return ids


def uuid7_hex() -> str:
    """One UUIDv7 as 32 lowercase hex digits (no dashes): the tail of the gate's prefixed ids."""
    return uuid7_strs(1)[0].replace("-", "")
