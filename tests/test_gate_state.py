"""The gate's shared state: drain and the revocation epoch, persisted and shared by every
process (read through a cache of at most a second)."""

import time

import pytest
from django.db import connection

from governance.gate.signals import gate_state_changed
from governance.gate.state import advance_epoch, end_drain, gate_state, start_drain
from governance.models import GateState

pytestmark = pytest.mark.django_db


@pytest.fixture
def announced():
    seen = []

    def receiver(sender, change, by, state, **details):
        previous = details.get("previous_epoch")
        seen.append((change, by, state.epoch, state.draining, previous, connection.in_atomic_block))

    gate_state_changed.connect(receiver)
    yield seen
    gate_state_changed.disconnect(receiver)


def test_a_new_gate_is_at_epoch_zero_and_not_draining():
    state = gate_state()
    assert (state.epoch, state.draining) == (0, False)


def test_drain_is_idempotent_and_records_who_started_it(announced):
    already, state = start_drain("alice")
    assert (already, state.draining, state.drain_started_by) == (False, True, "alice")
    assert state.drain_started_at is not None
    again, state = start_drain("bob")
    assert (again, state.drain_started_by) == (True, "alice")
    assert gate_state().draining
    assert announced == [("drain_started", "alice", 0, True, None, True)]


def test_a_drain_lasts_until_it_is_ended():
    start_drain("alice")
    assert GateState.objects.get().draining  # persisted: a restart keeps draining
    assert end_drain("bob") == (True, gate_state(max_age=0))
    assert not gate_state().draining
    assert end_drain("bob")[0] is False


def test_advancing_the_epoch_answers_previous_and_current(announced):
    assert advance_epoch("alice") == (0, 1)
    assert advance_epoch("bob") == (1, 2)
    state = gate_state()
    assert (state.epoch, state.epoch_advanced_by) == (2, "bob")
    assert [(change, previous) for change, _, _, _, previous, _ in announced] == [
        ("epoch_advanced", 0),
        ("epoch_advanced", 1),
    ]


def test_readers_see_another_process_change_within_a_second(django_assert_num_queries):
    assert gate_state().epoch == 0
    GateState.objects.filter(pk=1).update(epoch=4, draining=True)  # as another process would
    with django_assert_num_queries(0):
        assert gate_state().epoch == 0  # cached
    assert gate_state(max_age=0).epoch == 4
    GateState.objects.filter(pk=1).update(epoch=5)
    time.sleep(1.05)
    assert gate_state().epoch == 5


def test_the_state_row_is_recreated_if_missing():
    GateState.objects.all().delete()
    assert gate_state(max_age=0).epoch == 0
    assert advance_epoch("alice") == (0, 1)


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_parallel_revocations_each_advance_the_epoch_once():
    from concurrent.futures import ThreadPoolExecutor

    def revoke(n):
        try:
            return advance_epoch(f"operator-{n}")
        finally:
            connection.close()

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(revoke, range(8)))
    assert sorted(current for _, current in results) == list(range(1, 9))
    assert sorted(previous for previous, _ in results) == list(range(8))
    assert gate_state(max_age=0).epoch == 8
