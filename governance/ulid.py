"""ULIDs (48 bits of Unix milliseconds, 80 random bits, Crockford base32, 26 characters):
the identifiers edut's installer shows (``git_01J9B6A97WQG8GNYM4ZBX8E2NQ``, ``rb_…``, ``req_…``)."""

import os
import time

CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def new_ulid() -> str:
    value = (time.time_ns() // 1_000_000) << 80 | int.from_bytes(os.urandom(10), "big")
    return "".join(CROCKFORD[(value >> shift) & 31] for shift in range(125, -1, -5))
