"""``POST /v1/actions/{action_id}/execute`` end to end: lease + DPoP, the pipeline's steps in
order, the 200 with a receipt that verifies, the 202 of a held action, and each error code of
the reference's table that can occur in Mandate, over HTTP."""

import json

import pytest

from envelopes.models import GateApproval, GateExecution, SessionBudget
from evidence.models import AuditEvent, Receipt
from evidence.services.receipts import verify_receipt
from tests import gate_client
from tests.gate_world import AGENT, Target, gate, target  # noqa: F401  (fixtures)

pytestmark = pytest.mark.django_db


def execute(api_client, lease, action_id, body, **overrides):
    path = f"/v1/actions/{action_id}/execute"
    return api_client.post(
        path, json.dumps(body), content_type="application/json", **lease.headers("POST", path, **overrides)
    )


def ledger(trace_id):
    return list(AuditEvent.objects.filter(chain_id=trace_id).values_list("event_type", "payload"))


def test_an_allowed_call_executes_and_answers_a_verifiable_receipt(api_client, gate, target):
    lease = gate.lease()
    response = execute(api_client, lease, "local_fetch", {"url": f"{target}/hello"})
    assert response.status_code == 200, response.content
    body = response.json()
    assert set(body) >= {"trace_id", "action_id", "grant_id", "receipt_id", "output", "verification", "runtime"}
    assert body["action_id"] == "local_fetch" and body["output"]["status"] == 200
    assert body["verification_outcome"] == "verified"
    assert body["verification"] == {"outcome": "verified", "is_fully_successful": True}
    assert Target.seen[-1][:2] == ("GET", "/hello")
    receipt = Receipt.objects.get(receipt_id=body["receipt_id"])
    assert verify_receipt(receipt) == "verified" and receipt.grant_id == body["grant_id"]
    execution = GateExecution.objects.get(trace_id=body["trace_id"])
    assert execution.receipt_id == body["receipt_id"] and execution.session_id == lease.session_id
    ((event_type, payload),) = ledger(body["trace_id"])
    assert event_type == "GATE_ACTION_CALL" and payload["decision"] == "allow"
    assert payload["receipt_id"] == body["receipt_id"] and payload["grant_signature"]


def test_a_high_risk_call_is_held_for_a_person(api_client, gate, target):
    lease = gate.lease()
    response = execute(api_client, lease, "local_delete", {"url": f"{target}/thing/1"})
    assert response.status_code == 202, response.content
    body = response.json()
    assert body["decision"] == "pending_approval" and body["request_hash"].startswith("sha256:")
    approval = GateApproval.objects.get(approval_id=body["approval_id"])
    assert approval.state == "pending" and approval.envelope.kind == "action"
    assert approval.envelope.state == "awaiting_review" and approval.trace_id == body["trace_id"]
    assert not Target.seen  # nothing ran
    ((event_type, payload),) = ledger(body["trace_id"])
    assert payload["decision"] == "pending_approval" and payload["approval_id"] == body["approval_id"]


@pytest.mark.parametrize(
    ("action", "body", "status", "error"),
    [
        ("no_such_action", {"url": "x"}, 404, "action_not_found"),
        ("local_fetch", {"url": 5}, 422, "schema_violation"),
        ("local_fetch", {"url": "http://127.0.0.1/", "extra": 1}, 422, "schema_violation"),
        ("http_post", {"url": "https://httpbin.org/post", "body": "{}"}, 403, "policy_denied"),  # not granted
    ],
)
def test_refusals_answer_their_code_and_are_in_the_ledger(api_client, gate, action, body, status, error):
    lease = gate.lease()
    response = execute(api_client, lease, action, body)
    assert (response.status_code, response.json()["error"]) == (status, error), response.content
    events = AuditEvent.objects.filter(event_type="GATE_ACTION_CALL", payload__decision="deny", payload__error=error)
    assert events.count() == 1


def test_the_lease_and_proof_are_checked_first(api_client, gate, target):
    lease = gate.lease()
    path = "/v1/actions/local_fetch/execute"
    body = json.dumps({"url": f"{target}/"})
    missing = api_client.post(path, body, content_type="application/json")
    assert (missing.status_code, missing.json()) == (401, {"error": "missing_auth_header"})
    bearer = api_client.post(
        path, body, content_type="application/json", HTTP_AUTHORIZATION=f"Bearer {lease.lease_jwt}", HTTP_DPOP="x"
    )
    assert bearer.json()["error"] == "invalid_lease"
    wrong_method = api_client.post(path, body, content_type="application/json", **lease.headers("GET", path))
    assert wrong_method.json()["error"] == "invalid_dpop"
    headers = lease.headers("POST", path)
    assert api_client.post(path, body, content_type="application/json", **headers).status_code == 200
    replay = api_client.post(path, body, content_type="application/json", **headers)
    assert (replay.status_code, replay.json()["error"]) == (401, "replay_detected")


def test_a_budget_is_debited_and_exhausted_never_below_zero(api_client, gate, target):
    lease = gate.lease(budgets={"max_calls": 2})
    answers = [execute(api_client, lease, "local_fetch", {"url": f"{target}/{i}"}).status_code for i in range(3)]
    assert answers == [200, 200, 403]
    assert SessionBudget.objects.get(session_id=lease.session_id).calls_used == 2


def test_a_failing_provider_answers_502_with_a_receipt_kept(api_client, gate):
    lease = gate.lease()
    response = execute(api_client, lease, "local_fetch", {"url": "http://127.0.0.1:9/down"})
    assert (response.status_code, response.json()) == (502, {"error": "action_execution_failed"})
    ((event_type, payload),) = [
        e for e in AuditEvent.objects.filter(event_type="GATE_ACTION_CALL").values_list("event_type", "payload")
    ]
    assert payload["decision"] == "error" and Receipt.objects.filter(receipt_id=payload["receipt_id"]).exists()


def test_draining_refuses_new_calls(api_client, gate, target):
    from governance.gate.state import start_drain

    lease = gate.lease()
    start_drain("ops")
    response = execute(api_client, lease, "local_fetch", {"url": f"{target}/"})
    assert (response.status_code, response.json()) == (503, {"error": "draining"})


__all__ = ["gate", "gate_client", "target"]


@pytest.mark.django_db(transaction=True)  # the plan runs after the claim commits, in the request
def test_an_operator_approves_a_held_call_and_its_stored_plan_runs_once(api_client, gate, target):
    lease = gate.lease(budgets={"max_calls": 5})
    held = execute(api_client, lease, "local_delete", {"url": f"{target}/thing/1"}).json()
    response = gate.operator_client.post(
        f"/v1/approvals/{held['approval_id']}/approve", content_type="application/json"
    )
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["approval"]["approval_id"] == held["approval_id"] and body["trace_id"] == held["trace_id"]
    assert body["verification"]["is_fully_successful"] is True
    assert Target.seen == [("DELETE", "/thing/1", b"")]
    assert GateApproval.objects.get(approval_id=held["approval_id"]).state == "approved"
    assert SessionBudget.objects.get(session_id=lease.session_id).calls_used == 1
    again = gate.operator_client.post(f"/v1/approvals/{held['approval_id']}/approve", content_type="application/json")
    assert again.status_code == 404 and len(Target.seen) == 1
