"""The whole held-action flow as its two people live it, over HTTP and in a real browser: an
agent (DPoP lease, fresh proofs) asks for a high-risk action against a vendor the action does
not know yet and is told to wait (202); it polls (pending); an operator signs in to the
console, finds the held action's card in the inbox, opens it, reads the plan and approves it,
learning the vendor's domain; the agent's poll then says approved and names the receipt,
which the agent reads with its own lease (signature verified); the ledger holds the call,
the claim and the execution.

The vendor, ``items.example.com``, resolves to a local target for this test (the egress
guard's resolver is replaced; nothing leaves the machine). With ``MANDATE_SCREENSHOTS=<dir>``
the held-action page is saved as ``<dir>/held-action-1366.png`` (as tests/test_readme_journey.py
saves the others: ``MANDATE_SCREENSHOTS=docs/screenshots``)."""

import os
from pathlib import Path

import httpx
import pytest

from controlplane.gate import acl, audit
from controlplane.gate.registry import reload
from controlplane.models import LearnedDomain
from envelopes.gate.providers import egress
from envelopes.models import GateApproval
from governance.choices import Role
from governance.services.people import create_person, ensure_organization
from governance.services.tokens import issue_token
from tests import gate_client
from tests.browser import page  # noqa: F401  (fixture)
from tests.gate_world import Target, target  # noqa: F401  (fixture)
from tests.test_inbox_browser import PASSWORD, sign_in

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

SCREENSHOTS = os.environ.get("MANDATE_SCREENSHOTS", "")
AGENT = "agent-billing-cleanup"
VENDOR = "items.example.com"


class Agent:
    """An agent process: its own DPoP key, a lease, and calls with a fresh proof each time."""

    def __init__(self, base_url: str, credential: str):
        self.base_url = base_url
        self.http = httpx.Client(base_url=base_url, timeout=30)
        key = gate_client.make_key()
        response = self.http.post(
            "/v1/leases",
            json=gate_client.lease_body(key, agent_id=AGENT),
            headers={"Authorization": f"Bearer {credential}"},
        )
        assert response.status_code == 200, response.text
        body = response.json()
        self.lease = gate_client.Lease(
            body["lease_jwt"], body["session_id"], body["lease_jti"], body["expires_at"], key
        )

    def headers(self, method: str, path: str) -> dict:
        return self.lease.http_headers(method, self.base_url + path)

    def execute(self, action_id: str, body: dict) -> httpx.Response:
        path = f"/v1/actions/{action_id}/execute"
        return self.http.post(path, json=body, headers=self.headers("POST", path))

    def poll(self, approval_id: str) -> dict:
        path = f"/v1/approvals/{approval_id}/poll"
        response = self.http.get(path, headers=self.headers("GET", path))
        assert response.status_code == 200, response.text
        return response.json()

    def receipt(self, receipt_id: str) -> httpx.Response:
        path = f"/v1/receipts/{receipt_id}"
        return self.http.get(path, headers=self.headers("GET", path))


@pytest.fixture
def console(live_server, settings, monkeypatch, tmp_path, target):  # noqa: F811
    """Acme with an operator who signs in (otto) and a token that issues the agent's lease; the
    shipped catalogue, ``http_delete`` (high risk, no domain declared) granted to the agent;
    DPoP bound to the live server's URL; the vendor's name resolving to the local target."""
    settings.PUBLIC_BASE_URL = live_server.url
    settings.MANDATE_GATE_FS_ROOT = str(tmp_path / "fs")
    monkeypatch.setattr(egress, "resolve", lambda host, port: ["127.0.0.1"])
    acme = ensure_organization("acme", "Acme")
    create_person(
        acme,
        "otto",
        password=PASSWORD,
        roles=[Role.PLATFORM_OPERATOR],
        first_name="Otto",
        last_name="Tester",
        must_change_password=False,
    )
    issuer = create_person(acme, "lease-issuer", roles=[Role.PLATFORM_OPERATOR])
    _, credential = issue_token(issuer, "agent leases", [Role.PLATFORM_OPERATOR])
    reload()
    acl.grant(AGENT, ["http_delete"], actor=audit.SYSTEM)
    operator = {"Authorization": f"Bearer {credential}"}

    class Console:
        url = live_server.url
        vendor = f"http://{VENDOR}:{target.rsplit(':', 1)[1]}"
        agent = Agent(live_server.url, credential)
        operator_headers = operator

    yield Console
    Console.agent.http.close()


def test_an_agent_waits_for_an_operator_who_approves_its_held_action_in_the_inbox(page, console):  # noqa: F811
    agent = console.agent

    # The agent asks; the action is high risk and the vendor unknown: it waits for a person.
    held = agent.execute("http_delete", {"url": f"{console.vendor}/v1/invoices/inv-42"})
    assert held.status_code == 202, held.text
    waiting = held.json()
    assert waiting["decision"] == "pending_approval" and waiting["request_hash"].startswith("sha256:")
    approval_id = waiting["approval_id"]
    assert agent.poll(approval_id)["status"] == "pending"
    assert not Target.seen  # nothing ran
    approval = GateApproval.objects.get(approval_id=approval_id)

    # The operator finds it in the inbox.
    page.set_viewport_size({"width": 1366, "height": 900})
    sign_in(page, "otto")
    card = page.locator("article.inbox-card", has_text="Held action: http_delete")
    assert card.count() == 1
    assert card.get_attribute("data-card-id") == str(approval.envelope_id)
    card_text = card.inner_text()
    for text in ("high risk", AGENT, VENDOR, "you can decide"):
        assert text in card_text, text

    # Opens it and reads the plan that will run.
    card.locator("a[data-card]").click()
    page.wait_for_url(f"**/admin/envelopes/envelope/{approval.envelope_id}/action/")
    for heading in ("Why it was held", "The plan that will run", "The request body"):
        assert page.get_by_role("heading", name=heading, exact=True).is_visible(), heading
    plan = page.locator("#plan").inner_text()
    for text in ("http_delete", "builtin:http_api", f"{console.vendor}/v1/invoices/inv-42", approval.plan_hash):
        assert text in plan, text
    assert page.locator("#id_learn_domain").input_value() == VENDOR  # the unknown domain, offered
    if SCREENSHOTS:
        folder = Path(SCREENSHOTS)
        folder.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(folder / "held-action-1366.png"), full_page=True)

    # Approves, learning the vendor's domain; the stored plan runs once.
    page.check("#id_learn_domain_on")
    page.click("#action-approve")
    page.wait_for_selector("#action-outcome")
    assert "Approved" in page.locator("#action-outcome").inner_text()
    assert page.locator("#action-learned-domain").inner_text() == VENDOR
    receipt_id = page.locator("#action-receipt").inner_text()
    assert [(method, path) for method, path, _ in Target.seen] == [("DELETE", "/v1/invoices/inv-42")]
    assert LearnedDomain.objects.filter(action_id="http_delete", domain=VENDOR, approval_id=approval_id).exists()

    # The agent's poll says so and names the receipt, which it reads with its own lease.
    polled = agent.poll(approval_id)
    assert (polled["state"], polled["status"], polled["receipt_id"]) == ("approved", "approved", receipt_id)
    receipt = agent.receipt(receipt_id)
    assert receipt.status_code == 200, receipt.text
    document = receipt.json()
    assert document["signature_status"] == "verified"
    assert (document["trace_id"], document["action_id"]) == (waiting["trace_id"], "http_delete")
    assert document["verification_outcome"]["status"] == "verified" and document["failure_class"] is None

    # The ledger: the call (held), the claim, the execution; and the chain holds.
    events = httpx.get(
        f"{console.url}/v1/audit/events", params={"trace_id": waiting["trace_id"]}, headers=console.operator_headers
    ).json()["events"]
    seen = {(e["event_type"], e.get("decision")) for e in events}
    assert {("action_call", "pending_approval"), ("approval_claimed", None), ("action_call", "allow")} <= seen, seen
    (executed,) = [e for e in events if e["event_type"] == "action_call" and e.get("decision") == "allow"]
    assert executed["receipt_id"] == receipt_id and executed["approval_id"] == approval_id
    verdict = httpx.get(f"{console.url}/v1/audit/verify", headers=console.operator_headers).json()
    assert verdict["intact"] is True, verdict
