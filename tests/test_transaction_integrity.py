"""No request's transaction can be ended by another's leftovers.

Issue 10 saw a rare ``select_for_update cannot be used outside of a transaction`` 500 under
mixed traffic. The mechanism: ledger verification streamed its rows from a generator that held
``transaction.atomic()`` across its ``yield``s. When a walk ended by an exception (as every
``GET /v1/audit/verify`` did while the ledger held an event that could not be canonicalized),
the suspended generator stayed reachable from the traceback, and whichever thread later freed
it ran its ``Atomic.__exit__`` — on *that* thread's connection, ending the transaction of
whatever request was running there. The next ``select_for_update`` in that request failed."""

import gc
import json
import threading

import pytest
from django.db import connection, transaction

from envelopes.evaluation.engine import EvaluationRequest, evaluate
from evidence.models import LedgerHead
from evidence.services import verification
from tests.test_evaluate import payment

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


def in_thread(function):
    outcome = {}

    def run():
        try:
            outcome["value"] = function()
        except BaseException as exc:  # noqa: BLE001 (handed to the test thread)
            outcome["error"] = exc
        finally:
            connection.close()

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(30)
    return outcome


def test_a_ledger_walk_that_fails_leaves_no_transaction_for_another_thread_to_end(demo, monkeypatch):
    body = payment()
    evaluate(demo, EvaluationRequest(**body), json.dumps(body), performer_id="test")

    def fails(*args, **kwargs):
        raise RuntimeError("a check that raises mid-walk")

    monkeypatch.setattr(verification, "rehash_problem", fails)
    kept = in_thread(verification.verify_ledger)["error"]  # the traceback keeps the walk's frames
    assert isinstance(kept, RuntimeError)

    def request_in_a_transaction():
        with transaction.atomic():
            kept.__traceback__ = None  # what the walk left behind is freed here, on this thread
            gc.collect()
            assert connection.in_atomic_block and not connection.get_autocommit()
            return LedgerHead.objects.select_for_update().filter(pk=1).exists()

    outcome = in_thread(request_in_a_transaction)
    assert "error" not in outcome, repr(outcome.get("error"))
    assert outcome["value"] is True


def test_ledger_verification_still_walks_and_judges_the_ledger(demo):
    for amount in (100, 200):
        body = payment(consequence={"type": "monetary", "amount": amount, "currency": "GBP"})
        evaluate(demo, EvaluationRequest(**body), json.dumps(body), performer_id="test")
    verdict = verification.verify_ledger(batch_size=1)
    assert verdict.valid and verdict.events_checked == verdict.head_seq > 0
    assert not connection.in_atomic_block
