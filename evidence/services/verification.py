"""Walking chains and saying whether they are intact, and where they break first."""

from collections import namedtuple
from collections.abc import Iterable
from dataclasses import asdict, dataclass

from evidence.canonical import event_hash, ledger_hash
from evidence.choices import ChainErrorKind
from evidence.models import AuditEvent, LedgerHead


@dataclass
class ChainVerdict:
    valid: bool
    chain_length: int
    first_event_hash: str
    final_event_hash: str
    error_kind: str | None = None
    error_message: str | None = None
    broken_at: int | None = None  # the sequence position where the chain first breaks

    def as_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None or k in ("valid",)}


def recompute_hash(event: AuditEvent) -> str:
    return event_hash(
        chain_id=event.chain_id,
        sequence_no=event.sequence_no,
        event_type=event.event_type,
        performer_type=event.performer_type,
        performer_id=event.performer_id,
        payload=event.payload,
        occurred_at=event.occurred_at,
        prev_hash=event.prev_hash,
    )


def verify_events(
    events: Iterable[AuditEvent],
    *,
    expected_length: int | None = None,
    expected_final_hash: str | None = None,
    expected_terminal_types: Iterable[str] | None = None,
) -> ChainVerdict:
    """Verify one chain's events (ordered by sequence_no).

    The optional expectations come from the subject that owns the chain (an envelope's
    integrity section and state), catching events deleted from the end, which the
    links alone cannot show.
    """
    count, first, prev, last = 0, "", "", None

    def broken(kind, message, at):
        return ChainVerdict(False, count, first, prev, kind, message, at)

    for event in events:
        count += 1
        if count == 1:
            first = event.hash
        if event.sequence_no != count:
            return broken(
                ChainErrorKind.SEQUENCE_GAP,
                f"expected sequence_no {count}, found {event.sequence_no}",
                count,
            )
        if event.prev_hash != prev:
            return broken(
                ChainErrorKind.PREV_HASH_MISMATCH,
                f"event {count} does not link to the hash of event {count - 1}",
                count,
            )
        if recompute_hash(event) != event.hash:
            return broken(
                ChainErrorKind.EVENT_HASH_MISMATCH,
                f"event {count}'s content does not match its hash",
                count,
            )
        prev, last = event.hash, event

    if count == 0:
        return broken(ChainErrorKind.MISSING_EVENTS, "the chain has no events", 1)
    if expected_length is not None and count != expected_length:
        return broken(
            ChainErrorKind.MISSING_EVENTS,
            f"expected {expected_length} events, found {count}",
            min(count, expected_length) + 1,
        )
    if expected_final_hash is not None and prev != expected_final_hash:
        return broken(
            ChainErrorKind.MISSING_EVENTS,
            "the chain does not end at the recorded final event hash",
            count,
        )
    terminal = set(expected_terminal_types or ())
    if terminal and last.event_type not in terminal:
        return broken(
            ChainErrorKind.TERMINAL_STATE_MISMATCH,
            f"the chain ends with {last.event_type}, expected one of {sorted(terminal)}",
            count,
        )
    return ChainVerdict(True, count, first, prev)


def verify_chain(chain_id: str, **expectations) -> ChainVerdict:
    events = AuditEvent.objects.filter(chain_id=chain_id).order_by("sequence_no").iterator(chunk_size=2000)
    return verify_events(events, **expectations)


@dataclass
class LedgerVerdict:
    valid: bool
    events_checked: int
    head_seq: int
    error_kind: str | None = None
    error_message: str | None = None
    broken_at: int | None = None


# Rows read as tuples: building model instances costs more than hashing them.
LEDGER_FIELDS = (
    "ledger_seq",
    "chain_id",
    "sequence_no",
    "event_type",
    "performer_type",
    "performer_id",
    "payload",
    "occurred_at",
    "prev_hash",
    "hash",
    "ledger_prev_hash",
    "ledger_hash",
)
_LedgerRow = namedtuple("_LedgerRow", LEDGER_FIELDS)


def verify_ledger(batch_size: int = 5000) -> LedgerVerdict:
    """Walk every event in ledger order, re-hashing each event and each ledger link."""
    head = LedgerHead.objects.filter(pk=1).first()
    head_seq = head.seq if head else 0
    expected_seq, prev = 0, ""
    rows = AuditEvent.objects.order_by("ledger_seq").values_list(*LEDGER_FIELDS).iterator(chunk_size=batch_size)
    for event in map(_LedgerRow._make, rows):
        expected_seq += 1

        def broken(kind, message, seq=expected_seq):
            return LedgerVerdict(False, seq - 1, head_seq, kind, message, seq)

        if event.ledger_seq != expected_seq:
            return broken(ChainErrorKind.SEQUENCE_GAP, f"expected ledger_seq {expected_seq}, found {event.ledger_seq}")
        if recompute_hash(event) != event.hash:
            return broken(ChainErrorKind.EVENT_HASH_MISMATCH, f"event at ledger_seq {expected_seq} was altered")
        if event.ledger_prev_hash != prev or event.ledger_hash != ledger_hash(
            ledger_seq=event.ledger_seq, event_hash=event.hash, ledger_prev_hash=event.ledger_prev_hash
        ):
            return broken(ChainErrorKind.PREV_HASH_MISMATCH, f"ledger link at ledger_seq {expected_seq} is broken")
        prev = event.ledger_hash
    if expected_seq != head_seq or (head and head.hash != prev):
        return LedgerVerdict(
            False,
            expected_seq,
            head_seq,
            ChainErrorKind.MISSING_EVENTS,
            f"the ledger head is at {head_seq} but {expected_seq} events were found",
            expected_seq + 1,
        )
    return LedgerVerdict(True, expected_seq, head_seq)
