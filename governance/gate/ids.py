"""Gate identifiers: a prefix and a UUIDv7 in hex (time-ordered, unguessable), matching the
SDKs' ``^[a-zA-Z0-9][a-zA-Z0-9._-]*$``: ``ses_``, ``lea_``, ``trc_``, ``grant_``, ``rcpt_``, ``apr_``."""

import os
import time


def uuid7_int() -> int:
    """RFC 9562 version 7: 48 bits of Unix milliseconds, then 74 random bits."""
    value = (time.time_ns() // 1_000_000) << 80 | int.from_bytes(os.urandom(10), "big")
    value &= ~(0xF << 76)
    value |= 0x7 << 76  # version
    value &= ~(0x3 << 62)
    value |= 0x2 << 62  # variant
    return value


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid7_int():032x}"  # the UUID's hex
