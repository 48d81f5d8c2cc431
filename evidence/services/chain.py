"""Appending to the evidence chains.

``append_events`` runs inside the caller's transaction, so evidence commits or rolls
back with the decision it records. Every append takes the ledger head's row lock, which
serializes appends: a chain's tail and the ledger tip cannot move underneath it, so
neither a subject chain nor the ledger can fork. The unique constraints on
(chain_id, sequence_no) and on ledger_seq back that up at the database.

On Postgres the linking runs in the database (``mandate_append_events``, migration
0004): the events' own hashes are computed here, and one statement takes the lock,
computes the ledger links, inserts the rows and moves the head, so the lock is never
held across a network round trip. SQLite links here, through the ORM.
"""

import json
import math
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from django.core.serializers.json import DjangoJSONEncoder
from django.db import connection, transaction
from django.utils import timezone

from evidence.canonical import event_hash, ledger_hash
from evidence.ids import uuid7_strs
from evidence.models import AuditEvent, LedgerHead


@dataclass
class EventDraft:
    event_type: str
    payload: dict = field(default_factory=dict)
    performer_type: str = "system"
    performer_id: str = "mandate"
    occurred_at: datetime | None = None


# I-JSON (RFC 7493) numbers: integers beyond this cannot be hashed exactly by JCS.
SAFE_INTEGER = 2**53 - 1


def _i_json(value):
    if isinstance(value, dict):
        return {key: _i_json(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_i_json(item) for item in value]
    if isinstance(value, bool) or not isinstance(value, int | float):
        return value
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError("audit payloads cannot hold NaN or infinite numbers")
    if abs(value) > SAFE_INTEGER:
        # Kept exactly, as its decimal digits: a float this large is an integer, which a JSON
        # column would read back as an integer JCS cannot represent.
        return str(int(value))
    return value


class NotNative(Exception):
    """A value ``native_copy`` does not copy: a JSON column would change it."""


def native_copy(value):
    """A copy of a value that is already plain JSON (str keys, finite floats, safe
    integers); NotNative for anything that a JSON column would change."""
    kind = type(value)
    if value is None or kind is str or kind is bool:
        return value
    if kind is int:
        if -SAFE_INTEGER <= value <= SAFE_INTEGER:
            return value
        raise NotNative
    if kind is float:
        if -SAFE_INTEGER <= value <= SAFE_INTEGER:  # finite, and reads back as it is hashed
            return value
        raise NotNative
    if kind is dict:
        copy = {}
        for key, item in value.items():
            if type(key) is not str:
                raise NotNative
            copy[key] = native_copy(item)
        return copy
    if kind is list:
        return [native_copy(item) for item in value]
    if isinstance(value, str):
        return str.__str__(value)  # a str subclass (a choices member): its text, as JSON writes it
    raise NotNative


def json_native(value):
    """The value exactly as it will read back from a JSON column, in I-JSON's domain (a
    copy: later changes to ``value`` cannot reach what was hashed)."""
    try:
        return native_copy(value)
    except (NotNative, RecursionError):
        return _i_json(json.loads(json.dumps(value, cls=DjangoJSONEncoder)))


def _lock_ledger_head() -> LedgerHead:
    head = LedgerHead.objects.select_for_update().filter(pk=1).first()
    if head is None:
        LedgerHead.objects.bulk_create([LedgerHead(pk=1)], ignore_conflicts=True)
        head = LedgerHead.objects.select_for_update().get(pk=1)
    return head


def chain_tail(chain_id: str) -> AuditEvent | None:
    return AuditEvent.objects.filter(chain_id=chain_id).only("sequence_no", "hash").order_by("-sequence_no").first()


def draft_rows(chain_id: str, drafts: Sequence[EventDraft], sequence_no: int = 0, prev: str = "") -> list[dict]:
    """The events as rows (AuditEvent field: value) with their subject-chain fields and
    hashes; the ledger fields are set when they are stored."""
    now = timezone.now()
    rows = []
    ids = uuid7_strs(len(drafts))
    for index, draft in enumerate(drafts):
        sequence_no += 1
        payload = json_native(draft.payload)
        occurred_at = draft.occurred_at or now
        performer_id = str(draft.performer_id)
        digest = event_hash(
            chain_id=chain_id,
            sequence_no=sequence_no,
            event_type=draft.event_type,
            performer_type=draft.performer_type,
            performer_id=performer_id,
            payload=payload,
            occurred_at=occurred_at,
            prev_hash=prev,
        )
        rows.append(
            {
                "id": ids[index],
                "chain_id": chain_id,
                "sequence_no": sequence_no,
                "event_type": draft.event_type,
                "performer_type": draft.performer_type,
                "performer_id": performer_id,
                "payload": payload,
                "occurred_at": occurred_at,
                "prev_hash": prev,
                "hash": digest,
            }
        )
        prev = digest
    return rows


def _json_default(value):
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def rows_json(rows) -> str:
    """Rows as the JSON that ``jsonb_populate_record(set)`` reads (column: value)."""
    return json.dumps(rows, ensure_ascii=False, allow_nan=False, default=_json_default)


def as_events(rows: Sequence[dict]) -> list[AuditEvent]:
    return [AuditEvent(**{**row, "id": uuid.UUID(row["id"])}) for row in rows]


def apply_ledger_links(events: Sequence[AuditEvent], links) -> None:
    """Fill the ledger fields from ``mandate_append_events``'s rows."""
    for event, (seq, prev, link) in zip(events, links, strict=True):
        event.ledger_seq, event.ledger_prev_hash, event.ledger_hash = seq, prev, link


def _link_in_python(events: Sequence[AuditEvent], head: LedgerHead) -> None:
    """The ORM path (SQLite), under the caller's lock on ``head``: link, insert, move the head."""
    ledger_seq, ledger_prev = head.seq, head.hash
    for event in events:
        ledger_seq += 1
        link = ledger_hash(ledger_seq=ledger_seq, event_hash=event.hash, ledger_prev_hash=ledger_prev)
        event.ledger_seq, event.ledger_prev_hash, event.ledger_hash = ledger_seq, ledger_prev, link
        ledger_prev = link
    AuditEvent.objects.bulk_create(events)
    LedgerHead.objects.filter(pk=1).update(seq=ledger_seq, hash=ledger_prev)


def _link_in_postgres(rows: Sequence[dict], events: Sequence[AuditEvent]) -> None:
    """One statement: the database links, inserts and moves the head (migration 0004)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT * FROM mandate_append_events(%s::jsonb)", [rows_json(rows)])
        apply_ledger_links(events, cursor.fetchall())


def store_rows(rows: Sequence[dict]) -> list[AuditEvent]:
    """Link into the ledger and store events (``draft_rows``, of one chain or many) whose
    chain positions the caller owns: a chain nobody else can hold yet (its id was just
    minted), or one whose subject row the caller holds locked. On Postgres: one statement,
    in the caller's transaction if any."""
    events = as_events(rows)
    if connection.vendor == "postgresql":
        _link_in_postgres(rows, events)
        return events
    with transaction.atomic():
        _link_in_python(events, _lock_ledger_head())
    return events


def append_events(chain_id: str, drafts: Sequence[EventDraft], *, new_chain: bool = False) -> list[AuditEvent]:
    """Append ``drafts`` in order to ``chain_id``; return the stored events.

    ``new_chain=True`` says the caller just minted ``chain_id`` (a new envelope's id): no
    tail to read, so on Postgres the whole append is one statement that takes the ledger
    lock itself. Otherwise the ledger lock is taken before the tail is read, so two appends
    to one chain cannot both claim the same position.
    """
    if not drafts:
        return []
    if new_chain:
        return store_rows(draft_rows(chain_id, drafts))
    with transaction.atomic():
        head = _lock_ledger_head()
        tail = chain_tail(chain_id)
        rows = draft_rows(chain_id, drafts, tail.sequence_no if tail else 0, tail.hash if tail else "")
        events = as_events(rows)
        if connection.vendor == "postgresql":
            _link_in_postgres(rows, events)
        else:
            _link_in_python(events, head)
        return events


def append_event(chain_id: str, event_type: str, payload=None, **draft) -> AuditEvent:
    return append_events(chain_id, [EventDraft(event_type, payload or {}, **draft)])[0]
