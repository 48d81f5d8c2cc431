"""Timestamps as Mandate writes and reads them: RFC 3339, in UTC, each form written once.

Written, always in UTC with ``Z``:
- ``rfc3339``: six fractional digits (``2026-04-18T09:12:04.113000Z``) — MIDAS envelopes and
  control-plane documents;
- ``rfc3339_isoformat``: as ``datetime.isoformat`` (and DRF's ``DateTimeField``) writes it,
  fractional digits only when there are any (``2026-04-18T09:12:04Z``) — AIOS Govern's
  requests and decisions.

Read:
- ``parse_rfc3339``: strict RFC 3339 with an offset (query parameters);
- ``parse_iso_timestamp``: what ``datetime.fromisoformat`` reads (request bodies, bundle
  documents); the caller decides what a missing offset means.

The evidence chain hashes its own text form (``evidence.canonical.format_timestamp``): the
same text as ``rfc3339``, but part of a hash format that must never change, and evidence
depends on nothing else of ours.
"""

import re
from datetime import UTC, datetime

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


def parse_rfc3339(value: str) -> datetime:
    """An RFC 3339 timestamp with its offset (``T``, ``t`` or a space between date and time;
    ``Z`` or ``z`` for UTC); ``ValueError`` for anything else."""
    if not RFC3339.match(value):
        raise ValueError(f"not an RFC 3339 timestamp: {value!r}")
    return datetime.fromisoformat(value.upper())


def parse_iso_timestamp(value: str) -> datetime:
    """The moment ``datetime.fromisoformat`` reads in ``value`` (surrounding space ignored);
    naive when ``value`` has no offset. ``ValueError`` when it reads none."""
    return datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
