"""Time-ordered identifiers (UUID version 7, RFC 9562) for rows written at a high rate.

A random (version 4) primary key sends every insert to a random leaf of its index, so at
thousands of inserts per second the index's working set is the whole index and each first
touch of a page after a checkpoint writes the full page to the WAL. Version 7 ids start
with the millisecond, so inserts land at the right edge of the index. They stay UUIDs:
74 random bits (from ``os.urandom``) keep them unique and unguessable within a millisecond.
"""

import os
import time
import uuid

_VERSION = 0x7 << 76
_VARIANT = 0b10 << 62
_LOW = (1 << 62) - 1


def uuid7_int() -> int:
    millis = time.time_ns() // 1_000_000
    rand = int.from_bytes(os.urandom(10), "big")
    return (millis << 80) | _VERSION | ((rand >> 62) & 0xFFF) << 64 | _VARIANT | (rand & _LOW)


def uuid7() -> uuid.UUID:
    return uuid.UUID(int=uuid7_int())


def uuid7_str() -> str:
    h = f"{uuid7_int():032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
