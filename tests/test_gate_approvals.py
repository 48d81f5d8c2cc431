"""``/v1/approvals`` over HTTP: operators list and review held actions (secret names, never
values), approve (the stored plan runs once, through the core, and the answer is the execute
body with ``approval``) or deny; the agent polls its own. Tampering with the stored plan, a
revoke-all, a drain or a spent budget between hold and approval stop the run; 20 approvals
of one held action at once, against two server processes on PostgreSQL, run it exactly once.

Approving runs the plan after the claim commits, so those tests commit (``transaction=True``).
"""

import asyncio
import json
import uuid
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
from django.db import connection
from django.utils import timezone

from controlplane.models import LearnedDomain
from envelopes.models import Envelope, GateApproval, GateExecution, SessionBudget
from evidence.models import AuditEvent, Receipt
from evidence.services.receipts import verify_receipt
from governance.choices import Role
from governance.gate.operator_keys import create_operator_key
from governance.services.people import ensure_organization
from tests import gate_client
from tests.faults import database_url_named, free_port, server
from tests.gate_client import make_key, operator_headers
from tests.gate_world import AGENT, Target, gate, target  # noqa: F401  (fixtures)
from tests.held_actions import hold_action

pytestmark = pytest.mark.django_db
committing = pytest.mark.django_db(transaction=True)

DELETE = "/v1/actions/local_delete/execute"


def hold(api_client, lease, url: str) -> str:
    """A high-risk call, held: its approval id."""
    response = api_client.post(
        DELETE, json.dumps({"url": url}), content_type="application/json", **lease.headers("POST", DELETE)
    )
    assert response.status_code == 202, response.content
    return response.json()["approval_id"]


def approve_url(approval_id: str, **query) -> str:
    from urllib.parse import urlencode

    return f"/v1/approvals/{approval_id}/approve" + (f"?{urlencode(query)}" if query else "")


def poll(api_client, lease, approval_id: str):
    path = f"/v1/approvals/{approval_id}/poll"
    return api_client.get(path, **lease.headers("GET", path))


def chain_events(chain_id: str) -> list[str]:
    return list(
        AuditEvent.objects.filter(chain_id=chain_id).order_by("sequence_no").values_list("event_type", flat=True)
    )


def approval_row(approval_id: str) -> GateApproval:
    return GateApproval.objects.select_related("envelope").get(approval_id=approval_id)


def sql(statement: str, *params) -> None:
    """As someone with write access to the database would change it, bypassing the app."""
    with connection.cursor() as cursor:
        cursor.execute(statement, params)


def nothing_ran(approval_id: str) -> None:
    approval = approval_row(approval_id)
    assert approval.state == "failed"
    assert not Target.seen
    assert not GateExecution.objects.filter(trace_id=approval.trace_id).exists()
    assert not Receipt.objects.filter(trace_id=approval.trace_id).exists()


# --- list ------------------------------------------------------------------------------------------


def test_the_list_is_newest_first_filtered_by_status_and_limited(api_client, gate, target):
    lease = gate.lease()
    ids = [hold(api_client, lease, f"{target}/thing/{n}") for n in range(3)]
    gate.operator_client.post(f"/v1/approvals/{ids[0]}/deny", {"reason": "no"}, format="json")
    everything = gate.operator_client.get("/v1/approvals").json()
    assert [a["approval_id"] for a in everything["approvals"]] == ids[::-1] and everything["count"] == 3
    first = everything["approvals"][0]
    assert first["state"] == first["status"] == "pending" and first["action_id"] == "local_delete"
    assert first["agent_id"] == AGENT and first["session_id"] == lease.session_id
    pending = gate.operator_client.get("/v1/approvals", {"status": "pending"}).json()
    assert [a["approval_id"] for a in pending["approvals"]] == ids[:0:-1]
    denied = gate.operator_client.get("/v1/approvals", {"status": "denied"}).json()
    assert [a["approval_id"] for a in denied["approvals"]] == [ids[0]]
    assert gate.operator_client.get("/v1/approvals", {"limit": 1}).json()["count"] == 1


def test_the_list_is_capped_at_200(gate, organization):
    for _ in range(203):
        hold_action(organization)
    answer = gate.operator_client.get("/v1/approvals", {"limit": 1000}).json()
    assert answer["count"] == 200
    assert gate.operator_client.get("/v1/approvals").json()["count"] == 50  # the default


@pytest.mark.parametrize("query", [{"status": "waiting"}, {"limit": "many"}])
def test_a_bad_filter_is_400_invalid_request(gate, query):
    response = gate.operator_client.get("/v1/approvals", query)
    assert (response.status_code, response.json()["error"]) == (400, "invalid_request")


def test_an_expired_pending_approval_lists_as_expired(gate, organization):
    late = hold_action(organization, expires_in=timedelta(seconds=-1)).gate_approval
    listed = gate.operator_client.get("/v1/approvals", {"status": "expired"}).json()["approvals"]
    assert [(a["approval_id"], a["state"]) for a in listed] == [(late.approval_id, "expired")]
    assert gate.operator_client.get("/v1/approvals", {"status": "pending"}).json()["count"] == 0


def test_another_organizations_held_actions_are_not_there(gate, organization, api_client, target):
    theirs = hold_action(ensure_organization("globex", "Globex")).gate_approval
    ours = hold(api_client, gate.lease(), f"{target}/x")
    listed = gate.operator_client.get("/v1/approvals").json()["approvals"]
    assert [a["approval_id"] for a in listed] == [ours]
    assert gate.operator_client.get(f"/v1/approvals/{theirs.approval_id}").status_code == 404
    assert gate.operator_client.post(approve_url(theirs.approval_id)).status_code == 404
    assert gate.operator_client.post(f"/v1/approvals/{theirs.approval_id}/deny").status_code == 404
    assert GateApproval.objects.get(approval_id=theirs.approval_id).state == "pending"


@pytest.mark.parametrize("role", [Role.PLATFORM_VIEWER, Role.GOVERNANCE_APPROVER])
def test_who_is_not_an_operator_is_403(gate, client_with, organization, role):
    approval = hold_action(organization).gate_approval
    someone = client_with(role)
    for response in (
        someone.get("/v1/approvals"),
        someone.get(f"/v1/approvals/{approval.approval_id}"),
        someone.post(approve_url(approval.approval_id)),
        someone.post(f"/v1/approvals/{approval.approval_id}/deny", {"reason": "x"}, format="json"),
    ):
        assert (response.status_code, response.json()["error"]) == (403, "forbidden")
    assert GateApproval.objects.get(pk=approval.pk).state == "pending"


def test_an_agents_lease_is_no_operator_credential(api_client, gate, organization):
    lease = gate.lease()
    response = api_client.get("/v1/approvals", **lease.headers("GET", "/v1/approvals"))
    assert response.status_code in (401, 403)


# --- detail: the plan review, secret names only -------------------------------------------------------


def test_the_detail_is_the_plan_review_with_secret_names_only(api_client, gate, target, monkeypatch):
    monkeypatch.setenv("MANDATE_SECRET_API_TOKEN", "tok-very-secret-4711")
    lease = gate.lease(budgets={"max_calls": 5})
    approval_id = hold(api_client, lease, f"{target}/thing/7")
    response = gate.operator_client.get(f"/v1/approvals/{approval_id}")
    detail = response.json()
    row = approval_row(approval_id)
    assert detail["approval_id"] == approval_id and detail["state"] == "pending"
    assert detail["action_id"] == "local_delete" and detail["action_version"] == "1.0.0"
    assert detail["risk_level"] == "high" and detail["hold_reason"] == "the action's risk level needs a person"
    assert detail["plan_hash"] == row.plan_hash and detail["request_hash"] == row.request_hash
    assert detail["provider_module_digest"] == "builtin:http_api" and detail["verifier_kind"] == "http_status"
    assert detail["secret_names"] == ["API_TOKEN"]
    assert detail["egress"]["allowed_domains"] == ["127.0.0.1"] and detail["egress"]["allowed_methods"] == ["DELETE"]
    assert detail["approved_targets"]["url"] == f"{target}/thing/7"
    assert detail["approved_targets"]["domains"] == ["127.0.0.1"]
    assert detail["budget_snapshot"] == {"max_calls": 5, "calls_used": 0}
    assert detail["expires_at"] and detail["resource_limits"]["timeout_seconds"] == 30
    assert "tok-very-secret-4711" not in response.content.decode()


def test_an_unknown_approval_is_404(gate):
    response = gate.operator_client.get("/v1/approvals/apr_nope")
    assert (response.status_code, response.json()["error"]) == (404, "approval_not_found")
    assert gate.operator_client.post(approve_url("apr_nope")).status_code == 404


# --- approve ----------------------------------------------------------------------------------------


@committing
def test_approving_runs_the_stored_plan_and_answers_the_execute_body(api_client, gate, target):
    lease = gate.lease()
    approval_id = hold(api_client, lease, f"{target}/thing/1")
    response = gate.operator_client.post(approve_url(approval_id))
    assert response.status_code == 200, response.content
    body = response.json()
    assert set(body) == {
        "trace_id",
        "action_id",
        "grant_id",
        "receipt_id",
        "output",
        "verification_outcome",
        "verification",
        "runtime",
        "approval",
    }
    row = approval_row(approval_id)
    assert body["approval"] == {"approval_id": approval_id, "approved_by": row.decided_by, "operator_binding": None}
    assert body["verification"] == {"outcome": "verified", "is_fully_successful": True}
    assert body["output"]["status"] == 200 and Target.seen == [("DELETE", "/thing/1", b"")]
    assert row.state == "approved" and row.receipt_id == body["receipt_id"]
    assert verify_receipt(Receipt.objects.get(receipt_id=body["receipt_id"])) == "verified"
    execution = GateExecution.objects.get(trace_id=row.trace_id)
    assert (execution.approval_id, execution.session_id, execution.plan_hash) == (
        approval_id,
        lease.session_id,
        row.plan_hash,
    )
    trace = AuditEvent.objects.filter(chain_id=row.trace_id).order_by("sequence_no")
    assert [e.payload["decision"] for e in trace] == ["pending_approval", "allow"]
    assert trace.last().payload["approval_id"] == approval_id
    assert chain_events(row.envelope.chain_id)[-3:] == [
        "GATE_APPROVAL_CLAIMED",
        "GATE_APPROVAL_EXECUTED",
        "ENVELOPE_CLOSED",
    ]
    assert Envelope.objects.get(pk=row.pk).state == "closed"
    verdict = gate.operator_client.get("/v1/audit/verify").json()
    assert verdict["intact"] is True, verdict
    assert poll(api_client, lease, approval_id).json()["receipt_id"] == body["receipt_id"]


@committing
def test_an_operator_key_approval_binds_its_key(api_client, gate, target, organization):
    key = make_key()
    _, api_key = create_operator_key("ops-cli", jkt=key.jkt, organization=organization)
    approval_id = hold(api_client, gate.lease(), f"{target}/thing/2")
    path = f"/v1/approvals/{approval_id}/approve"
    response = api_client.post(path, content_type="application/json", **operator_headers(key, api_key, "POST", path))
    assert response.status_code == 200, response.content
    assert response.json()["approval"] == {
        "approval_id": approval_id,
        "approved_by": "ops-cli",
        "operator_binding": key.jkt,
    }
    claimed = AuditEvent.objects.get(
        chain_id=approval_row(approval_id).envelope.chain_id, event_type="GATE_APPROVAL_CLAIMED"
    )
    assert (claimed.performer_type, claimed.performer_id) == ("operator", "ops-cli")


@committing
def test_approving_with_learn_domain_learns_it_once_the_run_succeeded(api_client, gate, target):
    approval_id = hold(api_client, gate.lease(), f"{target}/thing/3")
    response = gate.operator_client.post(approve_url(approval_id, learn_domain="API.NewService.example"))
    assert response.status_code == 200, response.content
    assert response.json()["learned_domain"] == "api.newservice.example"
    learned = LearnedDomain.objects.get(action_id="local_delete", domain="api.newservice.example")
    assert (learned.source, learned.approval_id) == ("approval", approval_id)


@committing
def test_a_failed_run_learns_nothing_and_answers_502(api_client, gate):
    approval_id = hold(api_client, gate.lease(), f"http://127.0.0.1:{free_port()}/gone")
    response = gate.operator_client.post(approve_url(approval_id, learn_domain="api.newservice.example"))
    assert (response.status_code, response.json()) == (502, {"error": "action_execution_failed"})
    assert not LearnedDomain.objects.exists()
    row = approval_row(approval_id)
    assert row.state == "failed" and row.failure.startswith("provider_error:") and row.receipt_id
    assert Receipt.objects.get(receipt_id=row.receipt_id).failure_class == "provider_error"
    assert poll_state(row) == ("failed", "execution_failed")


def poll_state(row: GateApproval) -> tuple[str, str]:
    from envelopes.gate.api.answers import poll as poll_answer

    answer = poll_answer(row)
    return answer["status"], answer.get("reason")


@pytest.mark.parametrize(
    ("query", "error"), [("learn_domain=localhost", "invalid_domain"), ("learn_path=/etc/**", "invalid_path")]
)
def test_a_lesson_that_cannot_be_learned_is_400_before_anything_is_claimed(api_client, gate, target, query, error):
    approval_id = hold(api_client, gate.lease(), f"{target}/thing/4")
    response = gate.operator_client.post(f"/v1/approvals/{approval_id}/approve?{query}")
    assert (response.status_code, response.json()["error"]) == (400, error)
    assert approval_row(approval_id).state == "pending" and not Target.seen


@committing
def test_an_approval_already_decided_or_expired_is_404(api_client, gate, target):
    lease = gate.lease()
    done, denied, late = (hold(api_client, lease, f"{target}/thing/{n}") for n in range(3))
    assert gate.operator_client.post(approve_url(done)).status_code == 200
    assert gate.operator_client.post(f"/v1/approvals/{denied}/deny").status_code == 200
    GateApproval.objects.filter(approval_id=late).update(expires_at=timezone.now() - timedelta(seconds=1))
    for approval_id in (done, denied, late):
        for response in (
            gate.operator_client.post(approve_url(approval_id)),
            gate.operator_client.post(f"/v1/approvals/{approval_id}/deny", {"reason": "x"}, format="json"),
        ):
            assert (response.status_code, response.json()["error"]) == (404, "approval_not_found")
    assert len(Target.seen) == 1
    assert approval_row(late).state == "pending"  # the sweeper expires it; nobody decided it


# --- tampering, revocation, drain, budget ------------------------------------------------------------------


@committing
@pytest.mark.parametrize("tamper", ["plan", "plan_and_its_hash", "request_and_its_hash", "epoch"])
def test_a_tampered_held_action_is_refused_and_nothing_runs(api_client, gate, target, tamper):
    """Someone with write access to the database changes what will run; the stored plan's hash,
    the request's hash and the ledger's record of the hold (which nobody can change) catch it."""
    from envelopes.gate.plan import ExecutionPlan
    from envelopes.gate.steps.request import request_hash

    approval_id = hold(api_client, gate.lease(), f"{target}/thing/5")
    row = approval_row(approval_id)
    plan = dict(row.plan, egress={**row.plan["egress"], "allowed_domains": ["127.0.0.1", "evil.example"]})
    table = GateApproval._meta.db_table
    if tamper == "plan":
        sql(f"UPDATE {table} SET plan = %s WHERE approval_id = %s", json.dumps(plan), approval_id)
    elif tamper == "plan_and_its_hash":
        forged = ExecutionPlan.from_dict(plan).plan_hash()
        sql(
            f"UPDATE {table} SET plan = %s, plan_hash = %s WHERE approval_id = %s",
            json.dumps(plan),
            forged,
            approval_id,
        )
    elif tamper == "request_and_its_hash":
        body = {"url": f"{target}/everything"}
        sql(
            f"UPDATE {table} SET request_body = %s, request_hash = %s WHERE approval_id = %s",
            json.dumps(body),
            request_hash(body),
            approval_id,
        )
    else:
        sql(f"UPDATE {table} SET epoch = epoch + 1 WHERE approval_id = %s", approval_id)
    response = gate.operator_client.post(approve_url(approval_id))
    assert (response.status_code, response.json()["error"]) == (409, "plan_tampered"), response.content
    nothing_ran(approval_id)
    row = approval_row(approval_id)
    assert row.failure.startswith("plan_tampered:")
    refusal = AuditEvent.objects.get(chain_id=row.trace_id, payload__decision="deny")
    assert refusal.payload["error"] == "plan_tampered" and refusal.payload["approval_id"] == approval_id
    assert chain_events(row.envelope.chain_id)[-2:] == ["GATE_APPROVAL_FAILED", "ENVELOPE_CLOSED"]


@committing
def test_revoke_all_between_hold_and_approval_stops_the_run(api_client, gate, target):
    approval_id = hold(api_client, gate.lease(), f"{target}/thing/6")
    assert gate.operator_client.post("/v1/admin/revoke-all").status_code == 200
    response = gate.operator_client.post(approve_url(approval_id))
    assert (response.status_code, response.json()["error"]) == (409, "revoked")
    nothing_ran(approval_id)


@committing
def test_a_lease_revoked_alone_stops_its_held_actions(api_client, gate, target):
    from governance.models import GateLease

    lease = gate.lease()
    approval_id = hold(api_client, lease, f"{target}/thing/6")
    GateLease.objects.filter(lease_jti=lease.lease_jti).delete()
    response = gate.operator_client.post(approve_url(approval_id))
    assert (response.status_code, response.json()["error"]) == (409, "revoked")
    nothing_ran(approval_id)


def test_while_draining_approving_waits_and_denying_does_not(api_client, gate, target):
    lease = gate.lease()
    waiting, refused = hold(api_client, lease, f"{target}/a"), hold(api_client, lease, f"{target}/b")
    assert gate.operator_client.post("/v1/admin/drain").status_code == 200
    response = gate.operator_client.post(approve_url(waiting))
    assert (response.status_code, response.json()) == (503, {"error": "draining"})
    assert approval_row(waiting).state == "pending"
    assert gate.operator_client.post(f"/v1/approvals/{refused}/deny").status_code == 200


@committing
def test_an_approved_plan_spends_the_sessions_budget(api_client, gate, target):
    lease = gate.lease(budgets={"max_calls": 2})
    first, second = hold(api_client, lease, f"{target}/1"), hold(api_client, lease, f"{target}/2")
    fetch = "/v1/actions/local_fetch/execute"
    assert (
        api_client.post(
            fetch, json.dumps({"url": f"{target}/f"}), content_type="application/json", **lease.headers("POST", fetch)
        ).status_code
        == 200
    )
    assert gate.operator_client.post(approve_url(first)).status_code == 200
    assert SessionBudget.objects.get(session_id=lease.session_id).calls_used == 2
    response = gate.operator_client.post(approve_url(second))
    assert (response.status_code, response.json()["error"]) == (403, "budget_exhausted")
    assert [path for _, path, _ in Target.seen] == ["/f", "/1"]
    assert approval_row(second).state == "failed"
    assert SessionBudget.objects.get(session_id=lease.session_id).calls_used == 2


# --- deny ----------------------------------------------------------------------------------------------


def test_denying_answers_the_reference_body_and_runs_nothing(api_client, gate, target):
    lease = gate.lease()
    approval_id = hold(api_client, lease, f"{target}/thing/8")
    reason = "Not authorized\x1b[31m for production\n" + "!" * 600
    response = gate.operator_client.post(f"/v1/approvals/{approval_id}/deny", {"reason": reason}, format="json")
    assert response.status_code == 200
    row = approval_row(approval_id)
    body = response.json()
    assert body == {
        "decision": "deny",
        "trace_id": row.trace_id,
        "action_id": "local_delete",
        "approval_id": approval_id,
        "denied_by": row.decided_by,
        "deny_reason": body["deny_reason"],
    }
    assert body["deny_reason"].startswith("Not authorized[31m for production!!") and len(body["deny_reason"]) == 500
    assert row.state == "denied" and not Target.seen
    assert chain_events(row.envelope.chain_id)[-2:] == ["GATE_APPROVAL_DENIED", "ENVELOPE_CLOSED"]
    answer = poll(api_client, lease, approval_id).json()
    assert (answer["state"], answer["status"], answer["reason"]) == ("denied", "denied", body["deny_reason"])


def test_denying_without_a_body_is_allowed(gate, organization):
    approval = hold_action(organization).gate_approval
    response = gate.operator_client.post(f"/v1/approvals/{approval.approval_id}/deny")
    assert response.status_code == 200 and response.json()["deny_reason"] == ""


def test_a_reason_that_is_not_text_is_400(gate, organization):
    approval = hold_action(organization).gate_approval
    response = gate.operator_client.post(f"/v1/approvals/{approval.approval_id}/deny", {"reason": 5}, format="json")
    assert (response.status_code, response.json()["error"]) == (400, "invalid_request")


# --- poll --------------------------------------------------------------------------------------------


def test_the_agent_polls_its_own_held_action_by_state_and_status(api_client, gate, target):
    lease = gate.lease()
    approval_id = hold(api_client, lease, f"{target}/thing/9")
    response = poll(api_client, lease, approval_id)
    assert response.status_code == 200
    assert response.json() == {
        "approval_id": approval_id,
        "state": "pending",
        "status": "pending",
        "retry_after_seconds": 2,
    }
    GateApproval.objects.filter(approval_id=approval_id).update(state="claimed")
    claimed = poll(api_client, lease, approval_id).json()
    assert (claimed["state"], claimed["status"]) == ("claimed", "pending")  # the SDKs keep polling


def test_another_session_may_not_poll_it(api_client, gate, target):
    approval_id = hold(api_client, gate.lease(), f"{target}/thing/10")
    other = gate.lease()  # the same agent, another session
    response = poll(api_client, other, approval_id)
    assert (response.status_code, response.json()["error"]) == (403, "session_mismatch")


def test_polling_an_unknown_approval_is_404_and_without_a_lease_401(api_client, gate):
    lease = gate.lease()
    assert poll(api_client, lease, "apr_unknown").status_code == 404
    response = api_client.get("/v1/approvals/apr_unknown/poll")
    assert (response.status_code, response.json()["error"]) == (401, "missing_auth_header")


def test_an_expired_held_action_polls_as_expired(api_client, gate, target):
    lease = gate.lease()
    approval_id = hold(api_client, lease, f"{target}/thing/11")
    GateApproval.objects.filter(approval_id=approval_id).update(expires_at=timezone.now() - timedelta(seconds=1))
    answer = poll(api_client, lease, approval_id).json()
    assert (answer["state"], answer["status"]) == ("expired", "expired") and "retry_after_seconds" not in answer


# --- secrets never leave -------------------------------------------------------------------------------


class EchoingTarget(BaseHTTPRequestHandler):
    """Answers with the Authorization header it received (a careless API)."""

    received: list = []

    def do_DELETE(self):
        EchoingTarget.received.append(self.headers.get("authorization"))
        content = json.dumps({"you_sent": self.headers.get("authorization")}).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(content)))
        self.end_headers()
        self.wfile.write(content)

    def log_message(self, *args):
        pass


@pytest.fixture
def echoing_target():
    import threading

    listener = ThreadingHTTPServer(("127.0.0.1", 0), EchoingTarget)
    threading.Thread(target=listener.serve_forever, daemon=True).start()
    EchoingTarget.received = []
    try:
        yield f"http://127.0.0.1:{listener.server_address[1]}"
    finally:
        listener.shutdown()


@committing
def test_a_secrets_value_is_used_but_never_answered_stored_or_recorded(api_client, gate, echoing_target, monkeypatch):
    secret = "tok-very-secret-4711"
    monkeypatch.setenv("MANDATE_SECRET_API_TOKEN", secret)
    lease = gate.lease()
    approval_id = hold(api_client, lease, f"{echoing_target}/thing/12")
    answers = [
        gate.operator_client.get("/v1/approvals"),
        gate.operator_client.get(f"/v1/approvals/{approval_id}"),
        gate.operator_client.post(approve_url(approval_id)),
        poll(api_client, lease, approval_id),
    ]
    assert EchoingTarget.received == [f"Bearer {secret}"]  # the target got it
    executed = answers[2].json()
    assert executed["output"]["body"] == {"you_sent": "Bearer [redacted]"}
    answers.append(gate.operator_client.get(f"/v1/receipts/{executed['receipt_id']}"))
    answers.append(gate.operator_client.get("/v1/audit/events", {"limit": 1000}))
    assert all(response.status_code == 200 for response in answers)
    for response in answers:
        assert secret not in response.content.decode()
    stored = [
        AuditEvent.objects.values(),
        Receipt.objects.values(),
        GateApproval.objects.values(),
        GateExecution.objects.values(),
        Envelope.objects.values(),
    ]
    assert secret not in json.dumps([list(rows) for rows in stored], default=str)


# --- exactly once, under concurrency -------------------------------------------------------------------


@pytest.mark.postgres
@committing
def test_twenty_approvals_at_once_run_the_plan_exactly_once(gate, target, make_token, settings):
    """20 approve requests for one held action, in parallel, against two server processes of
    one deployment: one claims it (200), the others find it taken (404); the target is hit
    once, one receipt, one execution."""
    token = make_token(Role.PLATFORM_OPERATOR)
    bearer = {"Authorization": f"Bearer {token}"}
    database = database_url_named(f"mandate-approvals-{uuid.uuid4().hex[:8]}")
    key = make_key()

    async def run(first, second) -> tuple[list[int], str]:
        async with httpx.AsyncClient(timeout=60) as client:
            issued = await client.post(
                f"{first.url}/v1/leases", json=gate_client.lease_body(key, agent_id=AGENT), headers=bearer
            )
            assert issued.status_code == 200, issued.text
            lease = issued.json()["lease_jwt"]
            held = await client.post(
                f"{first.url}{DELETE}",
                json={"url": f"{target}/thing/once"},
                headers={"Authorization": f"DPoP {lease}", "DPoP": key.proof("POST", DELETE, lease)},
            )
            assert held.status_code == 202, held.text
            approval_id = held.json()["approval_id"]
            for app in (first, second):  # both warm (imports, connections), so their first approvals race
                warm = await client.get(f"{app.url}/v1/approvals/{approval_id}", headers=bearer)
                assert warm.json()["state"] == "pending"
            calls = [
                client.post(f"{(first, second)[n % 2].url}/v1/approvals/{approval_id}/approve", headers=bearer)
                for n in range(20)
            ]
            answers = await asyncio.gather(*calls)
            return [answer.status_code for answer in answers], approval_id

    port = free_port()
    public = f"http://127.0.0.1:{port}"  # the deployment's URL, which the proofs name
    settings.PUBLIC_BASE_URL = public
    with server(database, port, PUBLIC_BASE_URL=public) as first, server(database, PUBLIC_BASE_URL=public) as second:
        statuses, approval_id = asyncio.run(run(first, second))
    assert sorted(statuses) == [200] + [404] * 19, statuses
    assert [method for method, _, _ in Target.seen] == ["DELETE"]
    row = approval_row(approval_id)
    assert row.state == "approved"
    assert Receipt.objects.filter(trace_id=row.trace_id).count() == 1
    assert GateExecution.objects.filter(approval_id=approval_id).count() == 1
    claims = AuditEvent.objects.filter(chain_id=row.envelope.chain_id, event_type="GATE_APPROVAL_CLAIMED")
    assert claims.count() == 1


__all__ = ["gate", "target"]
