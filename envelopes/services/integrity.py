"""An envelope's audit chain: reading it, searching it, and checking it against the envelope.

An envelope's chain is ``AuditEvent.chain_id == str(envelope.id)``. The links alone
(``evidence.services.verification.verify_events``) show altered and removed-from-the-middle
events; the envelope's own integrity section (``audit_event_ids``, ``first_event_hash``,
``final_event_hash``) and its state show what the links cannot: events deleted from the end,
a chain rewritten from scratch, an event swapped for another.
"""

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from django.db.models import CharField, Func, Q, QuerySet
from django.utils import timezone

from envelopes.choices import TERMINAL_EVENTS
from envelopes.models import Envelope
from evidence.canonical import format_timestamp
from evidence.choices import ChainErrorKind
from evidence.models import AuditEvent
from evidence.services.verification import ChainVerdict, verify_events
from governance.cursors import decode_cursor, encode_cursor
from governance.errors import Invalid


class ChainIdOf(Func):
    """An envelope's UUID column as its audit ``chain_id`` (``str(uuid)``), on every backend.

    PostgreSQL stores a native uuid (``::text`` is the hyphenated form); SQLite stores the
    32 hex digits, which get their hyphens back.
    """

    output_field = CharField()

    def as_postgresql(self, compiler, connection, **extra):
        return super().as_sql(compiler, connection, template="(%(expressions)s)::text", **extra)

    def as_sqlite(self, compiler, connection, **extra):
        template = "||'-'||".join(
            f"substr(%(expressions)s, {start}, {length})"
            for start, length in ((1, 8), (9, 4), (13, 4), (17, 4), (21, 12))
        )
        return super().as_sql(compiler, connection, template=f"({template})", **extra)


def envelope_events(envelope: Envelope) -> list[AuditEvent]:
    """The envelope's audit events in chain order. One query."""
    return list(AuditEvent.objects.filter(chain_id=envelope.chain_id).order_by("sequence_no"))


def audit_event_item(event: AuditEvent, envelope_id: str, request_source: str, request_id: str) -> dict:
    """The wire shape of one envelope audit event. ``occurred_at`` is exactly the string that
    was hashed, so anyone can recompute ``hash`` from the item alone."""
    return {
        "id": str(event.id),
        "envelope_id": envelope_id,
        "request_source": request_source,
        "request_id": request_id,
        "sequence_no": event.sequence_no,
        "event_type": event.event_type,
        "performer_type": event.performer_type,
        "performer_id": event.performer_id,
        "payload": event.payload,
        "occurred_at": format_timestamp(event.occurred_at),
        "hash": event.hash,
        "prev_hash": event.prev_hash,
    }


def envelope_event_items(envelope: Envelope, events: Sequence[AuditEvent]) -> list[dict]:
    return [audit_event_item(e, envelope.chain_id, envelope.request_source, envelope.request_id) for e in events]


# --- integrity ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class IntegrityRecord:
    """What the envelope says its chain is: its integrity section and its state."""

    audit_event_ids: list[str]
    first_event_hash: str
    final_event_hash: str
    state: str

    @classmethod
    def of(cls, envelope: Envelope) -> "IntegrityRecord":
        return cls(
            [str(i) for i in envelope.audit_event_ids or []],
            envelope.first_event_hash,
            envelope.final_event_hash,
            envelope.state,
        )


def _id_mismatch(events: Sequence[AuditEvent], recorded_ids: Sequence[str]) -> tuple[str, str, int] | None:
    """The first position where the chain's event ids differ from the envelope's record.

    A recorded event that is no longer in the chain is ``missing_events`` (it was replaced);
    a recorded event found at another position is ``event_hash_mismatch`` (the events at this
    position are not the ones recorded).
    """
    found = [str(e.id) for e in events]
    for position, (actual, recorded) in enumerate(zip(found, recorded_ids, strict=False), start=1):
        if actual == recorded:
            continue
        if recorded not in found:
            return ChainErrorKind.MISSING_EVENTS, f"recorded event {recorded} is not in the chain", position
        return ChainErrorKind.EVENT_HASH_MISMATCH, f"event {position} is not the event recorded there", position
    return None


def assess_chain(events: Sequence[AuditEvent], record: IntegrityRecord) -> ChainVerdict:
    """Verify ``events`` (in sequence order) and cross-check them against the envelope's record.

    Order of checks: sequence numbers, links and hashes (first break wins); then the recorded
    length and final hash (``missing_events``); then the terminal event for the envelope's
    state (``terminal_state_mismatch``); then the recorded first hash and event ids.
    """
    verdict = verify_events(
        events,
        expected_length=len(record.audit_event_ids),
        expected_final_hash=record.final_event_hash,
        expected_terminal_types=TERMINAL_EVENTS.get(record.state),
    )
    if not verdict.valid:
        return verdict
    if verdict.first_event_hash != record.first_event_hash:
        return ChainVerdict(
            False,
            verdict.chain_length,
            verdict.first_event_hash,
            verdict.final_event_hash,
            ChainErrorKind.EVENT_HASH_MISMATCH,
            "the chain does not start at the recorded first event hash",
            1,
        )
    mismatch = _id_mismatch(events, record.audit_event_ids)
    if mismatch:
        kind, message, position = mismatch
        return ChainVerdict(
            False, verdict.chain_length, verdict.first_event_hash, verdict.final_event_hash, kind, message, position
        )
    return verdict


def integrity_report(envelope_id: str, events: Sequence[AuditEvent], verdict: ChainVerdict, checked_at: str) -> dict:
    """The integrity body (``GET /v1/evidence/envelopes/{id}/integrity``, the packet's ``integrity``).

    ``chain_length``, ``first_event_hash`` and ``final_event_hash`` describe the chain as
    stored, whether or not it verifies; ``error_kind`` and ``error_message`` appear only when
    it does not.
    """
    report = {
        "envelope_id": envelope_id,
        "valid": verdict.valid,
        "chain_length": len(events),
        "first_event_hash": events[0].hash if events else "",
        "final_event_hash": events[-1].hash if events else "",
        "checked_at": checked_at,
    }
    if not verdict.valid:
        report["error_kind"] = str(verdict.error_kind)
        report["error_message"] = verdict.error_message
    return report


def check_envelope_integrity(envelope: Envelope, events: Sequence[AuditEvent] | None = None, now=None) -> dict:
    """Verify the envelope's chain now; reads the events (one query) unless given."""
    events = envelope_events(envelope) if events is None else events
    verdict = assess_chain(events, IntegrityRecord.of(envelope))
    return integrity_report(envelope.chain_id, events, verdict, format_timestamp(now or timezone.now()))


# --- search ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EventSearch:
    """Filters of ``GET /v1/evidence/audit-events``; empty values do not filter."""

    event_type: str = ""
    event_types: tuple[str, ...] = ()  # any of these; with event_type too, both must hold
    envelope_id: str = ""
    request_source: str = ""
    request_id: str = ""
    since: datetime | None = None
    until: datetime | None = None
    descending: bool = False


@dataclass(frozen=True)
class EventPosition:
    """Where a page ends: the sort key of its last event."""

    occurred_at: datetime
    chain_id: str
    sequence_no: int


def encode_position(position: EventPosition, descending: bool) -> str:
    """An opaque cursor: the position and the order it was read in."""
    return encode_cursor(
        [
            "desc" if descending else "asc",
            format_timestamp(position.occurred_at),
            position.chain_id,
            position.sequence_no,
        ]
    )


def decode_position(cursor: str, descending: bool) -> EventPosition:
    """The position a cursor names, or a 400 (also when it was made for the other order)."""
    try:
        order, occurred_at, chain_id, sequence_no = decode_cursor(cursor)
        moment = datetime.fromisoformat(occurred_at)
        if moment.tzinfo is None or str(uuid.UUID(chain_id)) != chain_id:
            raise ValueError("malformed position")
        if type(sequence_no) is not int or not 0 <= sequence_no < 2**31:
            raise ValueError("malformed position")
    except (ValueError, TypeError, AttributeError) as exc:
        raise Invalid("invalid cursor") from exc
    if order != ("desc" if descending else "asc"):
        raise Invalid("cursor was issued for the other order")
    return EventPosition(moment, chain_id, sequence_no)


@dataclass
class EventPage:
    items: list[dict]
    next_position: EventPosition | None


def organization_events(organization, search: EventSearch) -> QuerySet:
    """Audit events of the organization's envelopes (and of no other chain) matching ``search``."""
    envelopes = Envelope.objects.filter(organization=organization)
    if search.envelope_id:
        envelopes = envelopes.filter(pk=search.envelope_id)
    if search.request_source:
        envelopes = envelopes.filter(request_source=search.request_source)
    if search.request_id:
        envelopes = envelopes.filter(request_id=search.request_id)
    events = AuditEvent.objects.filter(chain_id__in=envelopes.annotate(chain=ChainIdOf("id")).values("chain"))
    if search.event_type:
        events = events.filter(event_type=search.event_type)
    if search.event_types:
        events = events.filter(event_type__in=search.event_types)
    if search.since is not None:
        events = events.filter(occurred_at__gte=search.since)
    if search.until is not None:
        events = events.filter(occurred_at__lte=search.until)
    return events


def search_envelope_events(
    organization, search: EventSearch, limit: int, after: EventPosition | None = None
) -> EventPage:
    """One page of matching events ordered by ``(occurred_at, chain_id, sequence_no)`` (or the
    reverse), after ``after``. Two queries whatever the page size: the events, then their
    envelopes' request scope."""
    events = organization_events(organization, search)
    order = ("occurred_at", "chain_id", "sequence_no")
    if search.descending:
        order = tuple(f"-{name}" for name in order)
    if after is not None:
        beyond = "lt" if search.descending else "gt"
        events = events.filter(
            Q(**{f"occurred_at__{beyond}": after.occurred_at})
            | Q(occurred_at=after.occurred_at, **{f"chain_id__{beyond}": after.chain_id})
            | Q(occurred_at=after.occurred_at, chain_id=after.chain_id, **{f"sequence_no__{beyond}": after.sequence_no})
        )
    rows = list(events.order_by(*order)[: limit + 1])
    page, more = rows[:limit], len(rows) > limit
    scopes = dict(
        (str(pk), (source, request_id))
        for pk, source, request_id in Envelope.objects.filter(
            organization=organization, pk__in={e.chain_id for e in page}
        ).values_list("pk", "request_source", "request_id")
    )
    items = [audit_event_item(e, e.chain_id, *scopes.get(e.chain_id, ("", ""))) for e in page]
    last = page[-1] if more else None
    return EventPage(items, EventPosition(last.occurred_at, last.chain_id, last.sequence_no) if last else None)
