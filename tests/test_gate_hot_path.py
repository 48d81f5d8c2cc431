"""``POST /v1/actions/{action_id}/execute`` through the hot path in front of Django (the ASGI
application's route, on Postgres): parallel calls answered with their receipts, their evidence
group-committed, and a call whose evidence cannot be written answered 500
``evidence_persistence_failed`` with nothing of it left, while the calls beside it stand."""

import asyncio
import contextlib
import json
import threading
import uuid

import httpx
import pytest
from django.db import connections

from envelopes.gate.api.execute import EXECUTE
from envelopes.gate.steps import recording
from envelopes.models import GateExecution, SessionBudget
from evidence.choices import KeyAlgorithm
from evidence.models import AuditEvent, Receipt, SigningKey
from evidence.services import keys
from evidence.services.receipts import verify_receipt
from evidence.services.verification import verify_ledger
from governance.hotpath import HotPath
from tests import gate_world

gate, target = gate_world.gate, gate_world.target  # fixtures

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

PATH = "/v1/actions/local_fetch/execute"


@contextlib.contextmanager
def serving():
    """The execute route in front of Django, its threads' connections handed back at the end."""
    from governance.asgi import django_application

    route = HotPath(django_application, [EXECUTE], threads=2)
    assert route.routes == [EXECUTE]
    yield route
    both = threading.Barrier(2)

    def close():
        both.wait(timeout=10)
        connections.close_all()

    for future in [route.executor.submit(close) for _ in range(2)]:
        future.result()
    route.executor.shutdown()
    EXECUTE.group.close()


def post_all(app, calls):
    """POST every (lease, body) at once through ``app``; the responses in order."""

    async def scenario():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            posts = [
                client.post(
                    PATH,
                    content=json.dumps(body),
                    headers={**lease.http_headers("POST", PATH), "Content-Type": "application/json"},
                )
                for lease, body in calls
            ]
            return await asyncio.gather(*posts)

    return asyncio.run(scenario())


def events_of(trace_id):
    return list(AuditEvent.objects.filter(chain_id=trace_id).values_list("payload", flat=True))


def test_parallel_calls_on_the_hot_path_each_get_their_receipt_and_share_commits(gate, target):
    leases = [gate.lease() for _ in range(3)]
    calls = [(leases[n % 3], {"url": f"{target}/item/{n}"}) for n in range(12)]
    recorded = EXECUTE.group.recorded
    with serving() as app:
        responses = post_all(app, calls)
    assert [r.status_code for r in responses] == [200] * 12, [r.content for r in responses]
    assert EXECUTE.group.recorded - recorded == 12  # every call's evidence went through the group commit
    for response in responses:
        body = response.json()
        receipt = Receipt.objects.get(receipt_id=body["receipt_id"])
        assert verify_receipt(receipt) == "verified"
        assert GateExecution.objects.get(trace_id=body["trace_id"]).receipt_id == body["receipt_id"]
        ((payload,),) = [events_of(body["trace_id"])]
        assert payload["decision"] == "allow" and payload["receipt_id"] == body["receipt_id"]
    assert verify_ledger().valid


def test_a_call_whose_evidence_cannot_be_written_is_500_and_leaves_nothing_half_written(gate, target, monkeypatch):
    prepare = recording.execution_evidence

    def unstorable_for_bad(call, receipt_id):
        evidence = prepare(call, receipt_id)
        if call.body["url"].endswith("/bad"):
            evidence.execution["organization_id"] = str(uuid.uuid4())  # refused at the commit
        return evidence

    monkeypatch.setattr(recording, "execution_evidence", unstorable_for_bad)
    lease = gate.lease()
    calls = [(lease, {"url": f"{target}/item/{n}"}) for n in range(5)] + [(lease, {"url": f"{target}/bad"})]
    with serving() as app:
        responses = post_all(app, calls)
    statuses = [(r.status_code, r.json().get("error")) for r in responses]
    assert statuses == [(200, None)] * 5 + [(500, "evidence_persistence_failed")]
    assert Receipt.objects.count() == GateExecution.objects.count() == 5
    failed = AuditEvent.objects.get(event_type="GATE_ACTION_CALL", payload__error="evidence_persistence_failed")
    assert failed.payload["decision"] == "error" and "receipt_id" not in failed.payload
    assert AuditEvent.objects.filter(event_type="GATE_ACTION_CALL", payload__decision="allow").count() == 5
    assert verify_ledger().valid


def test_on_the_hot_path_receipts_signed_with_a_key_another_process_retired_are_signed_again(gate, target):
    stale = keys.active_signer(KeyAlgorithm.ED25519)
    keys.rotate_key(KeyAlgorithm.ED25519)
    keys._active_signers[KeyAlgorithm.ED25519] = stale  # what another process still holds
    lease = gate.lease()
    with serving() as app:
        responses = post_all(app, [(lease, {"url": f"{target}/item/{n}"}) for n in range(4)])
    assert [r.status_code for r in responses] == [200] * 4, [r.content for r in responses]
    active = SigningKey.objects.get(algorithm=KeyAlgorithm.ED25519, status="active")
    for response in responses:
        receipt = Receipt.objects.get(receipt_id=response.json()["receipt_id"])
        assert receipt.signing_key_id == active.kid != stale[0]
        assert verify_receipt(receipt) == "verified"
    assert Receipt.objects.count() == GateExecution.objects.count() == 4
    assert verify_ledger().valid


def test_parallel_calls_of_one_budgeted_session_never_overspend_it(gate, target):
    lease = gate.lease(budgets={"max_calls": 5})
    with serving() as app:
        responses = post_all(app, [(lease, {"url": f"{target}/item/{n}"}) for n in range(9)])
    statuses = sorted((r.status_code, r.json().get("error")) for r in responses)
    assert statuses == [(200, None)] * 5 + [(403, "budget_exhausted")] * 4
    assert SessionBudget.objects.get(session_id=lease.session_id).calls_used == 5
    assert Receipt.objects.count() == 5


def test_on_the_hot_path_the_http_call_and_the_replay_check_never_block_a_thread(gate, target, monkeypatch):
    # Their blocking twins are for Django's view; the route awaits both on its event loop.
    from envelopes.gate.steps import admission, dispatching

    def blocking(*args):
        raise AssertionError("a blocking twin ran on the hot path")

    monkeypatch.setattr(dispatching, "dispatch", blocking)
    monkeypatch.setattr(admission, "remember_proof", blocking)
    lease = gate.lease()
    with serving() as app:
        responses = post_all(app, [(lease, {"url": f"{target}/item/{n}"}) for n in range(4)])
    assert [r.status_code for r in responses] == [200] * 4, [r.content for r in responses]
    assert [r.json()["output"]["status"] for r in responses] == [200] * 4


def test_a_proof_replayed_on_the_hot_path_is_401_replay_detected(gate, target):
    lease = gate.lease()
    headers = {**lease.http_headers("POST", PATH), "Content-Type": "application/json"}
    body = json.dumps({"url": f"{target}/item/1"})

    async def twice(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            first = await client.post(PATH, content=body, headers=headers)
            second = await client.post(PATH, content=body, headers=headers)
            return first, second

    with serving() as app:
        first, second = asyncio.run(twice(app))
    assert first.status_code == 200
    assert (second.status_code, second.json()["error"]) == (401, "replay_detected")
    assert Receipt.objects.count() == 1


def test_with_redis_down_the_hot_path_fails_closed_503(gate, target, settings):
    lease = gate.lease()
    settings.REDIS_URL = "redis://127.0.0.1:1/0"  # nothing listens there
    with serving() as app:
        (response,) = post_all(app, [(lease, {"url": f"{target}/item/1"})])
    assert (response.status_code, response.json()) == (503, {"error": "replay_cache_unavailable"})
    assert Receipt.objects.count() == 0
