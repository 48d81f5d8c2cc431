"""Walking chains and saying whether they are intact, and where they break first."""

import contextlib
import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from functools import partial

from django.db import connection, transaction

from evidence.canonical import NonCanonical, event_hash, event_hash_at, format_timestamp, hex_ledger_hash, legacy_form
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


def recompute_hash(event: AuditEvent, payload=None) -> str:
    """The event's hash from its content (``payload`` in place of the event's when given);
    NonCanonical when the payload has no canonical form."""
    return event_hash(
        chain_id=event.chain_id,
        sequence_no=event.sequence_no,
        event_type=event.event_type,
        performer_type=event.performer_type,
        performer_id=event.performer_id,
        payload=event.payload if payload is None else payload,
        occurred_at=event.occurred_at,
        prev_hash=event.prev_hash,
    )


def rehash_problem(hash_of, payload, stored: str) -> str | None:
    """Why an event does not re-hash to ``stored`` (an error kind), or None when it does.

    ``hash_of(payload)`` computes the event's hash. A payload outside JCS's domain (an
    integer beyond ±(2⁵³−1) read back from the database) is re-hashed in the form writers
    before the edge's number domain hashed it (``legacy_form``); when that does not match
    either, the event is ``non_canonical_payload``: a verdict, never an exception.
    """
    try:
        return None if hash_of(payload) == stored else ChainErrorKind.EVENT_HASH_MISMATCH
    except NonCanonical:
        pass
    legacy = legacy_form(payload)
    try:
        if legacy is not None and hash_of(legacy) == stored:
            return None
    except NonCanonical:
        pass
    return ChainErrorKind.NON_CANONICAL_PAYLOAD


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
        problem = rehash_problem(partial(recompute_hash, event), event.payload, event.hash)
        if problem == ChainErrorKind.NON_CANONICAL_PAYLOAD:
            return broken(problem, f"event {count} ({event.id}) has a payload with no canonical form", count)
        if problem:
            return broken(problem, f"event {count}'s content does not match its hash", count)
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


# Rows read as tuples: building model instances costs more than hashing them. On Postgres
# the payload comes as its JSON text and the timestamp as the text that is hashed, so no
# Python datetime or Django field conversion is made per event.
_LEDGER_SQL = (
    "SELECT ledger_seq, chain_id, sequence_no, event_type, performer_type, performer_id, payload::text, "
    "to_char(occurred_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'), "
    "prev_hash, hash, ledger_prev_hash, ledger_hash FROM evidence_auditevent ORDER BY ledger_seq"
)
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


def _ledger_rows_postgres(batch_size: int):
    """Every event in ledger order, streamed by a server-side cursor (payload as text). The
    caller holds the transaction the cursor needs and closes this generator (``verify_ledger``)."""
    loads = json.loads
    with connection.connection.cursor(name="mandate_verify_ledger") as cursor:
        cursor.itersize = batch_size
        cursor.execute(_LEDGER_SQL)
        for row in cursor:
            yield (*row[:6], loads(row[6]), *row[7:])


def _ledger_rows_orm(batch_size: int):
    rows = AuditEvent.objects.order_by("ledger_seq").values_list(*LEDGER_FIELDS).iterator(chunk_size=batch_size)
    for row in rows:
        yield (*row[:7], format_timestamp(row[7]), *row[8:])


def verify_ledger(batch_size: int = 10_000) -> LedgerVerdict:
    """Walk every event in ledger order, re-hashing each event and each ledger link."""
    head = LedgerHead.objects.filter(pk=1).first()
    head_seq = head.seq if head else 0
    connection.ensure_connection()
    rows = _ledger_rows_postgres(batch_size) if connection.vendor == "postgresql" else _ledger_rows_orm(batch_size)
    # The transaction lives in this frame and the generator is closed here, whatever happens:
    # a generator suspended inside ``atomic()`` and left to the garbage collector is closed on
    # whichever thread collects it, and its ``Atomic.__exit__`` then ends *that* thread's
    # transaction (a request's select_for_update then fails "outside of a transaction").
    with transaction.atomic(), contextlib.closing(rows):
        return _walk_ledger(rows, head, head_seq)


def _walk_ledger(rows, head, head_seq) -> LedgerVerdict:
    expected_seq, prev = 0, ""

    def broken(kind, message, seq):
        return LedgerVerdict(False, seq - 1, head_seq, kind, message, seq)

    for (
        seq,
        chain_id,
        number,
        kind,
        performer_type,
        performer_id,
        payload,
        stamp,
        prev_hash,
        digest,
        link_prev,
        link,
    ) in rows:
        expected_seq += 1
        if seq != expected_seq:
            return broken(ChainErrorKind.SEQUENCE_GAP, f"expected ledger_seq {expected_seq}, found {seq}", expected_seq)
        hash_of = partial(
            event_hash_at, stamp, chain_id, number, kind, performer_type, performer_id, prev_hash=prev_hash
        )
        problem = rehash_problem(hash_of, payload, digest)
        if problem == ChainErrorKind.NON_CANONICAL_PAYLOAD:
            return broken(
                problem, f"event at ledger_seq {expected_seq} has a payload with no canonical form", expected_seq
            )
        if problem:
            return broken(problem, f"event at ledger_seq {expected_seq} was altered", expected_seq)
        # Both digests are verified hex by now (the event's recomputed, the previous link
        # checked below), so the link's JCS text needs no escaping.
        if link_prev != prev or link != hex_ledger_hash(seq, digest, prev):
            return broken(
                ChainErrorKind.PREV_HASH_MISMATCH, f"ledger link at ledger_seq {expected_seq} is broken", expected_seq
            )
        prev = link
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
