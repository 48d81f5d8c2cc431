import threading
import uuid
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import pytest
from django.db import DatabaseError, connection, connections, transaction

from evidence.canonical import canonical_json, format_timestamp
from evidence.models import AuditEvent, LedgerHead
from evidence.services.chain import EventDraft, append_event, append_events
from evidence.services.verification import verify_chain, verify_ledger
from tests.database_roles import as_owner_unguarded

pytestmark = pytest.mark.django_db


def _chain(n=4, chain_id="envelope:one"):
    drafts = [EventDraft(f"STEP_{i}", {"i": i, "note": "héllo"}, "agent", "agent-7") for i in range(1, n + 1)]
    return append_events(chain_id, drafts)


def _tamper(sql, params):
    """Change rows behind the service's back, as an attacker with DB access would."""
    with as_owner_unguarded("evidence_auditevent"), connection.cursor() as cursor:
        cursor.execute(sql, params)


@pytest.mark.parametrize(
    "moment",
    [
        datetime(2026, 12, 7, 18, 0, 1, 0, tzinfo=UTC),
        datetime(2026, 12, 7, 18, 0, 1, 7, tzinfo=timezone(timedelta(hours=-5, minutes=-30))),
        datetime(1999, 12, 31, 23, 59, 59, 999999, tzinfo=timezone(timedelta(hours=14))),
        datetime(1000, 1, 1, 12, tzinfo=UTC),
        datetime(999, 12, 31, 23, 59, 59, 5, tzinfo=UTC),
        datetime(5, 1, 1, tzinfo=UTC),
        datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
    ],
)
@pytest.mark.django_db(databases=[])
def test_timestamps_are_hashed_as_their_utc_text_with_six_fractional_digits(moment):
    assert format_timestamp(moment) == moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def test_appended_events_form_a_linked_chain_that_verifies():
    events = _chain()
    assert [e.sequence_no for e in events] == [1, 2, 3, 4]
    assert events[0].prev_hash == ""
    assert all(b.prev_hash == a.hash for a, b in zip(events, events[1:], strict=False))
    verdict = verify_chain("envelope:one", expected_length=4, expected_final_hash=events[-1].hash)
    assert verdict.valid
    assert verdict.chain_length == 4
    assert verdict.first_event_hash == events[0].hash
    assert verdict.final_event_hash == events[-1].hash


def test_appends_continue_an_existing_chain_and_the_ledger_spans_chains():
    first = _chain(2, "a")
    other = append_event("b", "OTHER", {"x": 1})
    more = append_event("a", "LATER", {"y": Decimal("1.50"), "at": datetime(2026, 1, 1, tzinfo=UTC)})
    assert more.sequence_no == 3 and more.prev_hash == first[-1].hash
    assert other.sequence_no == 1
    assert [e.ledger_seq for e in AuditEvent.objects.order_by("ledger_seq")] == [1, 2, 3, 4]
    assert other.ledger_prev_hash == first[-1].ledger_hash
    assert LedgerHead.objects.get().seq == 4
    assert verify_chain("a").valid and verify_chain("b").valid
    assert verify_ledger().valid


def test_chain_verifies_after_a_database_round_trip():
    # Hashes cover exactly what is stored: microsecond timestamps, JSON-native payloads.
    append_event("rt", "E", {"amount": Decimal("10.25"), "id": uuid.uuid4(), "f": 0.1, "big": 2**60})
    stored = AuditEvent.objects.get(chain_id="rt")
    assert stored.payload["big"] == str(2**60) and stored.payload["amount"] == "10.25"
    assert format_timestamp(stored.occurred_at).endswith("Z")
    assert verify_chain("rt").valid


def test_appends_roll_back_with_the_callers_transaction():
    _chain(1, "keep")
    with pytest.raises(RuntimeError), transaction.atomic():
        append_event("gone", "E")
        raise RuntimeError("the decision failed")
    assert not AuditEvent.objects.filter(chain_id="gone").exists()
    assert LedgerHead.objects.get().seq == 1
    assert verify_ledger().valid


def test_tampered_payload_is_an_event_hash_mismatch_at_its_position():
    events = _chain()
    _tamper(
        "UPDATE evidence_auditevent SET payload = %s WHERE id = %s",
        ['{"i": 99}', events[2].pk.hex if connection.vendor == "sqlite" else str(events[2].pk)],
    )
    verdict = verify_chain("envelope:one")
    assert not verdict.valid
    assert verdict.error_kind == "event_hash_mismatch"
    assert verdict.broken_at == 3
    ledger = verify_ledger()
    assert not ledger.valid and ledger.error_kind == "event_hash_mismatch" and ledger.broken_at == 3


def _pk(event):
    return event.pk.hex if connection.vendor == "sqlite" else str(event.pk)


def test_rewritten_link_is_a_prev_hash_mismatch():
    events = _chain()
    _tamper("UPDATE evidence_auditevent SET prev_hash = %s WHERE id = %s", ["0" * 64, _pk(events[1])])
    verdict = verify_chain("envelope:one")
    assert (verdict.valid, verdict.error_kind, verdict.broken_at) == (False, "prev_hash_mismatch", 2)


def test_deleted_middle_event_is_a_sequence_gap():
    events = _chain()
    _tamper("DELETE FROM evidence_auditevent WHERE id = %s", [_pk(events[1])])
    verdict = verify_chain("envelope:one")
    assert (verdict.valid, verdict.error_kind, verdict.broken_at) == (False, "sequence_gap", 2)
    assert verify_ledger().error_kind == "sequence_gap"


def test_deleted_tail_is_missing_events_against_the_owners_record():
    events = _chain()
    _tamper("DELETE FROM evidence_auditevent WHERE id = %s", [_pk(events[3])])
    # The links of the remaining three are intact; only the owner's record shows the loss.
    assert verify_chain("envelope:one").valid
    verdict = verify_chain("envelope:one", expected_length=4, expected_final_hash=events[3].hash)
    assert (verdict.valid, verdict.error_kind) == (False, "missing_events")
    assert verify_ledger().error_kind == "missing_events"


def test_empty_chain_is_missing_events():
    verdict = verify_chain("never-written")
    assert (verdict.valid, verdict.error_kind) == (False, "missing_events")


def test_chain_ending_in_the_wrong_state_is_a_terminal_state_mismatch():
    _chain(2)
    verdict = verify_chain("envelope:one", expected_terminal_types={"ENVELOPE_CLOSED"})
    assert (verdict.valid, verdict.error_kind) == (False, "terminal_state_mismatch")


def test_canonical_form_is_rfc8785():
    assert canonical_json({"b": 1, "a": [1.0, "é", None]}) == '{"a":[1,"é",null],"b":1}'.encode()


@pytest.mark.postgres
def test_postgres_refuses_update_and_delete_of_audit_events():
    event = append_event("immutable", "E", {"v": 1})
    for statement in (
        "UPDATE evidence_auditevent SET event_type = 'X' WHERE id = %s",
        "DELETE FROM evidence_auditevent WHERE id = %s",
    ):
        with (
            pytest.raises(DatabaseError, match="append-only|permission denied"),
            transaction.atomic(),
            connection.cursor() as cursor,
        ):
            cursor.execute(statement, [str(event.pk)])
    with pytest.raises(DatabaseError), transaction.atomic():
        AuditEvent.objects.filter(pk=event.pk).update(event_type="X")
    with pytest.raises(DatabaseError), transaction.atomic():
        AuditEvent.objects.filter(pk=event.pk).delete()
    assert AuditEvent.objects.get(pk=event.pk).event_type == "E"


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_concurrent_appends_never_fork_a_chain_or_the_ledger():
    writers, per_writer = 8, 15
    barrier = threading.Barrier(writers)
    errors = []

    def write(index):
        try:
            barrier.wait()
            for n in range(per_writer):
                # Half the writers share one chain; the rest each have their own.
                chain = "shared" if index % 2 == 0 else f"own-{index}"
                with transaction.atomic():
                    append_events(chain, [EventDraft("E", {"w": index, "n": n}), EventDraft("F", {"w": index})])
        except Exception as exc:  # collected and asserted below
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=write, args=(i,)) for i in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    total = writers * per_writer * 2
    assert AuditEvent.objects.count() == total
    shared = verify_chain("shared", expected_length=(writers // 2) * per_writer * 2)
    assert shared.valid, shared
    for index in range(1, writers, 2):
        assert verify_chain(f"own-{index}", expected_length=per_writer * 2).valid
    ledger = verify_ledger()
    assert ledger.valid and ledger.events_checked == total


@pytest.mark.parametrize(
    "value",
    [
        {"b": 1, "a": [True, None, "x"]},
        {"é": "ü", "z": {"y": [1, 2, {"k": '\n\t"\\\x01'}]}, "emoji": "🙂"},
        {"n": -(2**53 - 1), "m": 2**53 - 1},
        {"f": 1.0, "g": 0.1, "h": 1e21},
        {"\U0001f600": 1, "\uffff": 2},
        ["\u2028", "\x7f", ""],
    ],
)
def test_fast_canonical_form_is_identical_to_rfc8785(value):
    import rfc8785

    assert canonical_json(value) == rfc8785.dumps(value)


def test_ledger_link_hash_is_the_jcs_hash():
    from evidence.canonical import canonical_hash, ledger_hash

    expected = canonical_hash({"ledger_seq": 7, "event_hash": "ab" * 32, "ledger_prev_hash": ""})
    assert ledger_hash(ledger_seq=7, event_hash="ab" * 32, ledger_prev_hash="") == expected
