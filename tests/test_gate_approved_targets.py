"""Approving a held call runs it against the target the person saw: a call held because its
domain or path was not known yet runs once approved (and the domain is learned when asked),
the shipped ``http_delete`` sends its declared secret, a domain the gate will not learn does
not lose the receipt, and the agent's poll answers what LatchGate's SDKs read."""

import json
from pathlib import Path

import pytest

from controlplane.gate import acl, audit
from controlplane.gate.registry import reload
from controlplane.models import LearnedDomain
from envelopes.gate.providers import egress
from envelopes.gate.steps.dispatching import fs_root
from envelopes.models import GateApproval
from evidence.models import Receipt
from evidence.services.receipts import verify_receipt
from tests.gate_actions import read_manifest, write_manifest
from tests.gate_target import Target as EchoTarget
from tests.gate_world import AGENT, Target, gate, target  # noqa: F401  (fixtures)

# The stored plan runs after the claim commits: real transactions.
pytestmark = pytest.mark.django_db(transaction=True)

VENDOR = "items.example.com"  # resolved to the local target by the tests below


def execute(api_client, lease, action_id, body):
    path = f"/v1/actions/{action_id}/execute"
    return api_client.post(path, json.dumps(body), content_type="application/json", **lease.headers("POST", path))


def poll(api_client, lease, approval_id):
    path = f"/v1/approvals/{approval_id}/poll"
    return api_client.get(path, **lease.headers("GET", path)).json()


@pytest.fixture
def approve(gate):
    """``approve(approval_id, query="")``: the operator's approval; it answers the execution."""

    def run(approval_id, query=""):
        return gate.operator_client.post(f"/v1/approvals/{approval_id}/approve{query}", content_type="application/json")

    return run


@pytest.fixture
def vendor(monkeypatch, target, settings):  # noqa: F811
    """``items.example.com`` answers on the local target; ``vendor_fetch`` (low risk, no domain
    declared) is in the catalogue and granted."""
    monkeypatch.setattr(egress, "resolve", lambda host, port: ["127.0.0.1"])
    port = target.rsplit(":", 1)[1]
    return f"http://{VENDOR}:{port}"


def add_vendor_fetch(directory):
    fetch = read_manifest("http_fetch.yaml")
    fetch.update(action_id="vendor_fetch", description="GET from a vendor not declared yet")
    fetch["egress"] = {"profile": "proxy_allowlist", "allowed_domains": []}
    write_manifest(directory, "vendor_fetch.yaml", fetch)


def test_a_call_held_for_an_unknown_domain_runs_once_approved_and_the_domain_is_learned(
    api_client, gate, vendor, approve, settings
):
    add_vendor_fetch(settings.MANDATE_ACTIONS_DIR)
    reload()
    acl.grant(AGENT, ["vendor_fetch"], actor=audit.SYSTEM)
    lease = gate.lease()
    held = execute(api_client, lease, "vendor_fetch", {"url": f"{vendor}/v1/items/1"})
    assert held.status_code == 202, held.content
    approval_id = held.json()["approval_id"]
    assert GateApproval.objects.get(approval_id=approval_id).hold_reason.endswith("not on the action's allowlist")
    assert poll(api_client, lease, approval_id) == {
        "approval_id": approval_id,
        "state": "pending",
        "status": "pending",
        "retry_after_seconds": 2,
    }

    response = approve(approval_id, f"?learn_domain={VENDOR}")
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["learned_domain"] == VENDOR and body["verification"]["is_fully_successful"] is True
    assert Target.seen[-1][:2] == ("GET", "/v1/items/1")
    assert LearnedDomain.objects.filter(action_id="vendor_fetch", domain=VENDOR, approval_id=approval_id).exists()
    assert poll(api_client, lease, approval_id) == {
        "approval_id": approval_id,
        "state": "approved",
        "status": "approved",
        "receipt_id": body["receipt_id"],
    }
    assert verify_receipt(Receipt.objects.get(receipt_id=body["receipt_id"])) == "verified"

    # Learned: the next call to it runs without a person.
    again = execute(api_client, lease, "vendor_fetch", {"url": f"{vendor}/v1/items/2"})
    assert again.status_code == 200, again.content


def test_the_shipped_http_delete_sends_its_secret_once_approved(api_client, gate, approve, monkeypatch):
    monkeypatch.setenv("MANDATE_SECRET_API_TOKEN", "tok-1234567890")
    acl.grant(AGENT, ["http_delete"], actor=audit.SYSTEM)
    echo = EchoTarget()  # answers with the request it got, headers included
    try:
        lease = gate.lease()
        held = execute(api_client, lease, "http_delete", {"url": f"{echo.base}/echo"}).json()
        response = approve(held["approval_id"])
    finally:
        echo.close()
    assert response.status_code == 200, response.content
    ((request,),) = [echo.seen]
    assert request["method"] == "DELETE" and request["headers"]["Authorization"] == "Bearer tok-1234567890"
    output = response.json()["output"]
    assert output["status"] == 200 and output["body"]["headers"]["Authorization"] == "Bearer [redacted]"


def test_a_lesson_the_gate_refuses_does_not_lose_the_receipt(api_client, gate, target, approve):
    from controlplane.models import LearnedPath

    lease = gate.lease()
    held = execute(api_client, lease, "local_delete", {"url": f"{target}/things/8"}).json()
    never = approve(held["approval_id"], "?learn_domain=127.0.0.1")  # an IP: never learned, said before it runs
    assert (never.status_code, never.json()["error"]) == (400, "invalid_domain") and not Target.seen
    response = approve(held["approval_id"], "?learn_path=notes/**")  # refused only when learned: not an fs action
    assert response.status_code == 200, response.content
    approval = GateApproval.objects.get(approval_id=held["approval_id"])
    assert approval.state == "approved" and Receipt.objects.filter(receipt_id=approval.receipt_id).exists()
    assert not LearnedDomain.objects.filter(domain="127.0.0.1").exists() and not LearnedPath.objects.exists()


def test_a_call_held_for_an_unknown_path_runs_once_approved(api_client, gate, approve, organization):
    lease = gate.lease()
    notes = Path(fs_root(organization.pk), "notes")
    notes.mkdir(parents=True, exist_ok=True)
    (notes / "plan.cfg").write_text("ship it")
    held = execute(api_client, lease, "fs_read", {"operation": "read", "path": "notes/plan.cfg"})
    assert held.status_code == 202, held.content
    response = approve(held.json()["approval_id"])
    assert response.status_code == 200, response.content
    assert response.json()["output"]["content"] == "ship it"


def test_a_denied_call_polls_as_denied_with_the_reason(api_client, gate, target):
    lease = gate.lease()
    held = execute(api_client, lease, "local_delete", {"url": f"{target}/things/9"}).json()
    denied = gate.operator_client.post(
        f"/v1/approvals/{held['approval_id']}/deny", {"reason": "not today"}, format="json"
    )
    assert denied.status_code == 200, denied.content
    assert poll(api_client, lease, held["approval_id"]) == {
        "approval_id": held["approval_id"],
        "state": "denied",
        "status": "denied",
        "reason": "not today",
    }
    assert not Target.seen


__all__ = ["gate", "target"]
