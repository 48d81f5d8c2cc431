"""The action gate's ledger events: ordinary audit events (``GATE_*`` types) whose payload
names the trace, action, principal, session and decision, so ``GET /v1/audit/events`` can
filter on them through partial indexes that cover only gate events (``evidence.models``)."""

from dataclasses import dataclass
from datetime import datetime

from django.db.models.fields.json import KT
from django.db.models.lookups import Exact

from evidence.choices import GateDecision
from evidence.models import GATE_EVENT_PREFIX, GATE_EVENTS, AuditEvent
from evidence.services.chain import EventDraft

# The payload keys every gate event carries, each behind its own index.
GATE_KEYS = ("trace_id", "action_id", "principal", "session_id", "decision")
# Names the API puts beside the payload's keys in a listed event; details cannot use them.
RESERVED_KEYS = frozenset(
    {
        "id",
        "timestamp",
        "event_type",
        "chain_id",
        "sequence_no",
        "ledger_seq",
        "performer_type",
        "performer_id",
        "occurred_at",
        "hash",
        "prev_hash",
    }
)
MAX_LIMIT = 1000
_DECISIONS = frozenset(GateDecision.values)


def gate_event(
    event_type: str,
    *,
    trace_id: str,
    action_id: str | None,
    principal: str | None,
    session_id: str | None,
    decision: str | None,
    performer_type: str = "system",
    performer_id: str = "mandate",
    **details,
) -> EventDraft:
    """A draft of one gate ledger event, for ``append_events`` in the caller's transaction.

    ``event_type`` is ``GATE_`` + upper case (``GATE_ACTION_CALL``, ``GATE_LEASE_ISSUED``,
    ``GATE_APPROVAL_GRANTED``, ``GATE_ADMIN_DRAIN``, ...); the API lists it as LatchGate's name
    (``action_call``). ``details`` join the payload beside the five keys (LatchGate's flat event:
    ``reason``, ``grant_id``, ``receipt_id``, ``verification_outcome``, ...).
    """
    if not event_type.startswith(GATE_EVENT_PREFIX) or event_type != event_type.upper():
        raise ValueError(f"gate event types are {GATE_EVENT_PREFIX} + upper case, not {event_type!r}")
    if decision is not None and decision not in _DECISIONS:
        raise ValueError(f"decision must be one of {', '.join(GateDecision.values)}")
    clash = RESERVED_KEYS.intersection(details)
    if clash:
        raise ValueError(f"{', '.join(sorted(clash))}: reserved for the event's own fields")
    payload = {
        "trace_id": trace_id,
        "action_id": action_id,
        "principal": principal,
        "session_id": session_id,
        "decision": None if decision is None else str(decision),
        **details,
    }
    return EventDraft(event_type, payload, performer_type=performer_type, performer_id=performer_id)


@dataclass(frozen=True)
class GateEventFilter:
    """``GET /v1/audit/events``'s filters: each set one must match (AND); ``after`` and
    ``before`` are exclusive bounds on ``occurred_at``."""

    trace_id: str | None = None
    action_id: str | None = None
    principal: str | None = None
    session_id: str | None = None
    decision: str | None = None
    event_type: str | None = None  # as stored: GATE_...
    after: datetime | None = None
    before: datetime | None = None
    limit: int = 100


def gate_events(query: GateEventFilter) -> list[AuditEvent]:
    """Gate events matching ``query``, newest first (``occurred_at``, then ledger order), at
    most ``query.limit`` (1..1000). One query; each filter is an index range in that order."""
    events = AuditEvent.objects.filter(GATE_EVENTS)
    for key in GATE_KEYS:
        value = getattr(query, key)
        if value is not None:
            # ``payload ->> key = value``: the indexed expression (``payload__key=`` would compare
            # jsonb, and a lookup on KT would read the value as JSON on SQLite).
            events = events.filter(Exact(KT(f"payload__{key}"), value))
    if query.event_type is not None:
        events = events.filter(event_type=query.event_type)
    if query.after is not None:
        events = events.filter(occurred_at__gt=query.after)
    if query.before is not None:
        events = events.filter(occurred_at__lt=query.before)
    limit = min(max(query.limit, 1), MAX_LIMIT)
    return list(events.order_by("-occurred_at", "-ledger_seq")[:limit])
