"""Page cursors: the last row's sort key, opaque to the caller (base64url JSON)."""

import base64
import binascii
import json

from governance.errors import Invalid


def encode_cursor(values: list) -> str:
    """An opaque page cursor: base64url JSON of the last row's sort key."""
    return base64.urlsafe_b64encode(json.dumps(values, separators=(",", ":")).encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> list:
    """The sort key a cursor carries, or ``Invalid``; callers validate its parts."""
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        values = json.loads(base64.urlsafe_b64decode(padded.encode("ascii")))
    except (ValueError, UnicodeError, binascii.Error) as exc:
        raise Invalid("invalid cursor") from exc
    if not isinstance(values, list):
        raise Invalid("invalid cursor")
    return values
