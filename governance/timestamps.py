"""Timestamps as Mandate writes and reads them: RFC 3339, in UTC, each form written once.

Written, always in UTC with ``Z``:
- ``rfc3339``: six fractional digits (``2026-04-18T09:12:04.113000Z``) — MIDAS envelopes and
  control-plane documents;
- ``rfc3339_isoformat``: as ``datetime.isoformat`` (and DRF's ``DateTimeField``) writes it,
  fractional digits only when there are any (``2026-04-18T09:12:04Z``) — AIOS Govern's
  requests and decisions.

Read (both refuse offsets of 16 hours or more and moments outside years 1..9999 in UTC,
which Postgres cannot store, and return UTC):
- ``parse_rfc3339``: strict RFC 3339 with an offset (query parameters);
- ``parse_iso_timestamp``: what ``datetime.fromisoformat`` reads (request bodies, bundle
  documents); the caller decides what a missing offset means.

The evidence chain hashes its own text form (``evidence.canonical.format_timestamp``): the
same text as ``rfc3339``, but part of a hash format that must never change, and evidence
depends on nothing else of ours.
"""

import re
from datetime import UTC, datetime, timedelta

RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$")


def _utc(moment: datetime) -> datetime:
    """The moment in UTC; a naive one is taken to be UTC already."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def rfc3339(moment: datetime | None) -> str | None:
    """``2026-04-18T09:12:04.113000Z`` (always six fractional digits), or ``None``."""
    if moment is None:
        return None
    return _utc(moment).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def rfc3339_isoformat(moment: datetime | None) -> str | None:
    """``2026-04-18T09:12:04Z``, or ``2026-04-18T09:12:04.113000Z`` when there is a fraction;
    ``None`` for ``None``."""
    if moment is None:
        return None
    return _utc(moment).isoformat().replace("+00:00", "Z")


# Postgres refuses offsets of 16 hours or more (RFC 3339 allows up to 23:59).
MAX_OFFSET = timedelta(hours=16)


class UnstorableTimestamp(ValueError):
    """A valid timestamp that Postgres cannot store."""


def _storable(moment: datetime) -> datetime:
    """An aware ``moment`` in UTC, if Postgres can hold it: an offset under 16 hours and a UTC
    date within years 1 to 9999. ``ValueError`` otherwise. A naive one is returned as is."""
    offset = moment.utcoffset()
    if offset is None:
        return moment
    if abs(offset) >= MAX_OFFSET:
        raise UnstorableTimestamp("the UTC offset must be within ±15:59")
    try:
        return moment.astimezone(UTC)
    except OverflowError:
        raise UnstorableTimestamp("the moment is outside years 1 to 9999 in UTC") from None


def parse_rfc3339(value: str) -> datetime:
    """An RFC 3339 timestamp with its offset (``T``, ``t`` or a space between date and time;
    ``Z`` or ``z`` for UTC), in UTC; ``ValueError`` for anything else or a moment Postgres
    cannot store."""
    if not RFC3339.match(value):
        raise ValueError(f"not an RFC 3339 timestamp: {value!r}")
    return _storable(datetime.fromisoformat(value.upper()))


def parse_iso_timestamp(value: str) -> datetime:
    """The moment ``datetime.fromisoformat`` reads in ``value`` (surrounding space ignored),
    in UTC; naive when ``value`` has no offset. ``ValueError`` when it reads none, or one
    Postgres cannot store."""
    return _storable(datetime.fromisoformat(value.strip().replace("Z", "+00:00")))
