"""Query-string values shared by list endpoints: timestamps and page sizes, with 400s that name them."""

from datetime import datetime

from governance.api.errors import APIError
from governance.timestamps import UnstorableTimestamp, parse_rfc3339

MAX_LIMIT = 500


def timestamp_param(name: str, value: str) -> datetime:
    """An RFC 3339 timestamp (offset required), or a 400 naming the parameter."""
    try:
        return parse_rfc3339(value)
    except UnstorableTimestamp as exc:
        raise APIError(400, f"{name}: {exc}") from exc
    except ValueError as exc:
        raise APIError(
            400, f"{name} must be an RFC 3339 timestamp such as 2026-04-18T09:12:04Z (percent-encode '+' as %2B)"
        ) from exc


def parse_limit(value: str | None, default: int) -> int:
    """A page size in 1..MAX_LIMIT; absent or empty means ``default``."""
    if not value:
        return default
    if not (value.isascii() and value.isdigit()) or not 1 <= int(value) <= MAX_LIMIT:
        raise APIError(400, f"limit must be an integer between 1 and {MAX_LIMIT}")
    return int(value)
