"""Appending to the evidence chains.

``append_events`` runs inside the caller's transaction, so evidence commits or rolls
back with the decision it records. It takes the ledger head's row lock first, which
serializes every append: a chain's tail and the ledger tip cannot move underneath it,
so neither a subject chain nor the ledger can fork. The unique constraint on
(chain_id, sequence_no) and on ledger_seq back that up at the database.
"""

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from django.core.serializers.json import DjangoJSONEncoder
from django.db import transaction
from django.utils import timezone

from evidence.canonical import event_hash, ledger_hash
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
    if isinstance(value, int) and abs(value) > SAFE_INTEGER:
        return str(value)  # kept exactly, as its decimal digits
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError("audit payloads cannot hold NaN or infinite numbers")
    return value


def json_native(value):
    """The value exactly as it will read back from a JSON column, in I-JSON's domain."""
    return _i_json(json.loads(json.dumps(value, cls=DjangoJSONEncoder)))


def _lock_ledger_head() -> LedgerHead:
    head = LedgerHead.objects.select_for_update().filter(pk=1).first()
    if head is None:
        LedgerHead.objects.bulk_create([LedgerHead(pk=1)], ignore_conflicts=True)
        head = LedgerHead.objects.select_for_update().get(pk=1)
    return head


def chain_tail(chain_id: str) -> AuditEvent | None:
    return AuditEvent.objects.filter(chain_id=chain_id).only("sequence_no", "hash").order_by("-sequence_no").first()


def append_events(chain_id: str, drafts: Sequence[EventDraft], *, new_chain: bool = False) -> list[AuditEvent]:
    """Append ``drafts`` in order to ``chain_id``; return the stored events.

    ``new_chain=True`` says the caller just minted ``chain_id`` (a new envelope's id), which
    saves reading the chain's tail; the unique constraint still guards the claim.
    """
    if not drafts:
        return []
    with transaction.atomic():
        head = _lock_ledger_head()
        tail = None if new_chain else chain_tail(chain_id)
        sequence_no = tail.sequence_no if tail else 0
        prev = tail.hash if tail else ""
        ledger_seq, ledger_prev = head.seq, head.hash
        now = timezone.now()
        events = []
        for draft in drafts:
            sequence_no += 1
            ledger_seq += 1
            payload = json_native(draft.payload)
            occurred_at = draft.occurred_at or now
            digest = event_hash(
                chain_id=chain_id,
                sequence_no=sequence_no,
                event_type=draft.event_type,
                performer_type=draft.performer_type,
                performer_id=str(draft.performer_id),
                payload=payload,
                occurred_at=occurred_at,
                prev_hash=prev,
            )
            link = ledger_hash(ledger_seq=ledger_seq, event_hash=digest, ledger_prev_hash=ledger_prev)
            events.append(
                AuditEvent(
                    chain_id=chain_id,
                    sequence_no=sequence_no,
                    event_type=draft.event_type,
                    performer_type=draft.performer_type,
                    performer_id=str(draft.performer_id),
                    payload=payload,
                    occurred_at=occurred_at,
                    prev_hash=prev,
                    hash=digest,
                    ledger_seq=ledger_seq,
                    ledger_prev_hash=ledger_prev,
                    ledger_hash=link,
                )
            )
            prev, ledger_prev = digest, link
        AuditEvent.objects.bulk_create(events)
        LedgerHead.objects.filter(pk=1).update(seq=ledger_seq, hash=ledger_prev)
        return events


def append_event(chain_id: str, event_type: str, payload=None, **draft) -> AuditEvent:
    return append_events(chain_id, [EventDraft(event_type, payload or {}, **draft)])[0]
