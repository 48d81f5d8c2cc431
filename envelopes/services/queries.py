"""Reading envelopes: organization scope, newest-first order, cursor pages, request lookup.

Lists are ordered newest first by ``(created_at, id)``, so a cursor — the last row's pair,
base64url-encoded — resumes exactly where the page ended even when envelopes share a
timestamp, and no row is skipped or repeated while new envelopes arrive (they sort before
the cursor).
"""

import re
import uuid
from dataclasses import dataclass
from datetime import datetime

from django.db.models import Q, QuerySet

from envelopes.models import Envelope
from governance.control_characters import CONTROL_CHARACTER_RANGE
from governance.cursors import decode_cursor, encode_cursor
from governance.errors import Invalid, NotFound

# Without page parameters a list answers MIDAS's plain JSON array, capped at this many
# envelopes (the newest); page with ``limit``/``cursor`` to read further.
PLAIN_LIST_CAP = 1000
DEFAULT_PAGE_SIZE = 50
NEWEST_FIRST = ("-created_at", "-id")

FORBIDDEN_IN_REQUEST_ID = re.compile(rf"[/\\{CONTROL_CHARACTER_RANGE}]")
MAX_REQUEST_ID_LENGTH = 255


def organization_envelopes(organization) -> QuerySet:
    """Every envelope of the organization, newest first."""
    return Envelope.objects.filter(organization=organization).order_by(*NEWEST_FIRST)


def parse_envelope_id(value: str) -> uuid.UUID:
    """An envelope id from a path or body, or a 400."""
    try:
        return uuid.UUID(str(value))
    except (ValueError, AttributeError) as exc:
        raise Invalid("invalid envelope id") from exc


def envelope_by_id(organization, envelope_id: str) -> Envelope:
    """The organization's envelope with this id: 400 for an id that is not a UUID, 404 if unknown
    (an envelope of another organization is unknown here)."""
    found = Envelope.objects.filter(organization=organization, pk=parse_envelope_id(envelope_id)).first()
    if found is None:
        raise NotFound("envelope not found")
    return found


def check_request_scope(request_id: str, source: str) -> None:
    """MIDAS's request-id rules: 1..255 characters, no ``/``, ``\\`` or control characters."""
    for name, value in (("request id", request_id), ("source", source)):
        if not value or len(value) > MAX_REQUEST_ID_LENGTH or FORBIDDEN_IN_REQUEST_ID.search(value):
            raise Invalid(f"invalid {name}")


def envelope_by_request(organization, request_id: str, source: str = "api") -> Envelope:
    """The envelope recorded for ``(source, request_id)``: 400 for an invalid id, 404 if none."""
    check_request_scope(request_id, source)
    found = Envelope.objects.filter(organization=organization, request_source=source, request_id=request_id).first()
    if found is None:
        raise NotFound("decision not found")
    return found


# --- pages -------------------------------------------------------------------------------------


def encode_envelope_cursor(envelope: Envelope) -> str:
    return encode_cursor([envelope.created_at.isoformat(), str(envelope.id)])


def decode_envelope_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    """The ``(created_at, id)`` a cursor names, or a 400."""
    try:
        created_at, envelope_id = decode_cursor(cursor)
        moment = datetime.fromisoformat(created_at)
        if moment.tzinfo is None:
            raise ValueError("naive timestamp")
        return moment, uuid.UUID(envelope_id)
    except (ValueError, TypeError, AttributeError) as exc:
        raise Invalid("invalid cursor") from exc


@dataclass
class Page:
    items: list[Envelope]
    next_cursor: str | None


def envelope_page(queryset: QuerySet, limit: int, cursor: str = "") -> Page:
    """One page of ``queryset`` (already newest first) after ``cursor``; ``next_cursor`` is
    ``None`` on the last page. One query."""
    if cursor:
        created_at, envelope_id = decode_envelope_cursor(cursor)
        queryset = queryset.filter(Q(created_at__lt=created_at) | Q(created_at=created_at, id__lt=envelope_id))
    rows = list(queryset.order_by(*NEWEST_FIRST)[: limit + 1])
    if len(rows) > limit:
        return Page(rows[:limit], encode_envelope_cursor(rows[limit - 1]))
    return Page(rows, None)


def capped_list(queryset: QuerySet) -> tuple[list[Envelope], bool]:
    """The newest ``PLAIN_LIST_CAP`` envelopes of ``queryset`` and whether more exist. One query."""
    rows = list(queryset.order_by(*NEWEST_FIRST)[: PLAIN_LIST_CAP + 1])
    return rows[:PLAIN_LIST_CAP], len(rows) > PLAIN_LIST_CAP
