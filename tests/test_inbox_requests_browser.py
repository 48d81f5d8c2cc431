"""Agents' requests in a real browser (Chromium via Playwright): an agent registers and submits
through the HTTP API, the card appears styled by its hints, people act on it in the inbox, and
the decision reaches the agent by long-poll and by a signed webhook."""

import hashlib
import hmac
import json
import os
import threading
import time
from datetime import timedelta

import httpx
import pytest
from django.utils import timezone

from envelopes.models import ApprovalRequest, Tweak
from envelopes.requests.channels import authenticate_channel_key, create_invite
from envelopes.requests.decisions import act
from governance.choices import Role
from governance.services.people import create_person, ensure_organization
from tests.browser import page  # noqa: F401  (fixture)
from tests.test_inbox_browser import PASSWORD, sign_in
from tests.test_webhooks import Receiver, eager_tasks  # noqa: F401  (fixture)

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

INBOX_SCREENSHOT = os.environ.get("MANDATE_INBOX5_SCREENSHOT", "/tmp/inbox5.png")
REQUEST_SCREENSHOT = os.environ.get("MANDATE_REQUEST5_SCREENSHOT", "/tmp/request5.png")
AGENTS_SCREENSHOT = os.environ.get("MANDATE_AGENTS5_SCREENSHOT", "/tmp/agents5.png")
PHONE = {"width": 390, "height": 844}
LAPTOP = {"width": 1280, "height": 900}


def phone_shot(path: str) -> str:
    return path.replace(".png", "_phone.png")


@pytest.fixture
def acme():
    organization = ensure_organization("acme", "Acme")
    maria = create_person(organization, "maria", password=PASSWORD, must_change_password=False)
    people = {
        "maria": maria,
        "olivia": create_person(
            organization,
            "olivia",
            password=PASSWORD,
            roles=[Role.GOVERNANCE_APPROVER],
            manager=maria,
            first_name="Olivia",
            last_name="Owens",
            must_change_password=False,
        ),
    }
    for name in ("alice", "bob"):
        people[name] = create_person(
            organization, name, password=PASSWORD, roles=[Role.GOVERNANCE_APPROVER], must_change_password=False
        )
    return organization, people


@pytest.fixture
def receiver():
    server = Receiver()
    yield server
    server.close()


class Agent:
    """An agent talking to Mandate over HTTP, as a client library would."""

    def __init__(self, base_url: str, invite_token: str, name: str):
        answer = httpx.post(
            f"{base_url}/api/register-channel", json={"invite_token": invite_token, "name": name}, timeout=10
        )
        assert answer.status_code == 201, answer.text
        registered = answer.json()
        self.base_url = base_url
        self.channel_id = registered["channel_id"]
        self.key = registered["api_key"]
        self.secret = registered["webhook_secret"]

    @property
    def headers(self) -> dict:
        return {"Authorization": f"Bearer {self.key}"}

    def submit(self, **envelope) -> str:
        body = {"type": "approval_request", "title": "Transfer example.com", "risk_level": "medium", **envelope}
        answer = httpx.post(
            f"{self.base_url}/api/channels/{self.channel_id}/requests", json=body, headers=self.headers, timeout=10
        )
        assert answer.status_code == 201, answer.text
        assert answer.json()["status"] == "pending"
        return answer.json()["request_id"]

    def get(self, request_id: str) -> dict:
        return httpx.get(f"{self.base_url}/api/requests/{request_id}", headers=self.headers, timeout=10).json()

    def wait(self, request_id: str, timeout: int) -> httpx.Response:
        return httpx.get(
            f"{self.base_url}/api/requests/{request_id}/wait",
            params={"timeout": timeout},
            headers=self.headers,
            timeout=timeout + 10,
        )


def agent_of(live_server, owner, name="domain-bot") -> Agent:
    _, token = create_invite(owner)
    return Agent(live_server.url, token, name)


def wait_until(condition, seconds: float = 15.0):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError("timed out waiting")


def style(locator, prop: str) -> str:
    return locator.evaluate(f"el => getComputedStyle(el).getPropertyValue('{prop}')")


def test_a_second_approver_approves_an_urgent_request_and_the_agent_hears_by_long_poll_and_webhook(
    page,  # noqa: F811
    live_server,
    acme,
    receiver,
    eager_tasks,  # noqa: F811
    settings,
):
    settings.MANDATE_WEBHOOK_ALLOW_PRIVATE = True
    organization, people = acme
    agent = agent_of(live_server, people["olivia"])
    request_id = agent.submit(
        type="spend_approval",
        title="Buy a 3-year domain renewal",
        summary="example.com expires in 9 days; renewing at the registrar's list price.",
        risk_level="high",
        payload={"amount": 1250, "currency": "USD", "registrar": "Gandi", "domain": "example.com"},
        approval_rule={"type": "n_of_x", "required": 2, "approvers": ["alice", "bob"]},
        bg_color="#fff1e6",
        badge="URGENT",
        accent_bar="#d1242f",
        pulse="strong",
        top_sort=True,
        expires_at=(timezone.now() + timedelta(hours=2)).isoformat(),
        on_timeout="escalate",
        return_mode="both",
        return_webhook=receiver.url(),
    )
    other = agent.submit(title="Rotate the staging TLS certificate", risk_level="low", pulse="light")
    agent.submit(type="informational", route="notify_manager", title="Nightly backup finished", risk_level="low")

    # The card appears, styled by the agent's hints, first in the inbox (top_sort), its risk in words.
    page.set_viewport_size(LAPTOP)
    sign_in(page, "bob")
    cards = page.locator("article.inbox-card")
    assert cards.first.get_attribute("data-card-id") == request_id
    card = page.locator(f"article[data-card-id='{request_id}']")
    ribbon = card.locator(".inbox-ribbon")
    assert ribbon.inner_text().strip() == "URGENT"
    assert style(ribbon, "background-color") == "rgb(209, 36, 47)"
    assert style(card, "background-color") == "rgb(255, 241, 230)"
    assert style(card, "border-left-color") == "rgb(209, 36, 47)"
    assert style(card, "animation-name") == "inbox-pulse-strong"
    risk = card.locator(".inbox-risk")
    assert risk.inner_text().strip() == "high risk" and risk.is_visible()
    text = card.inner_text().lower()
    for expected in (
        "spend approval",
        "usd 1,250",
        "domain-bot",
        "olivia owens",
        "expires in 2 hours,",
        "owner's manager",
    ):
        assert expected in text, expected
    assert "0 of 2 approvals" in text and "you can decide" in text
    assert page.locator(f"article[data-card-id='{other}']").count() == 1
    page.emulate_media(reduced_motion="reduce")
    assert style(card, "animation-name") == "none"  # no movement, a still ring instead
    page.emulate_media(reduced_motion="no-preference")
    page.screenshot(path=INBOX_SCREENSHOT, full_page=True)
    page.set_viewport_size(PHONE)
    page.screenshot(path=phone_shot(INBOX_SCREENSHOT), full_page=True)
    page.set_viewport_size(LAPTOP)

    # Alice approves elsewhere: Bob's inbox shows it without a reload.
    act(organization.pk, request_id, people["alice"], "approve", comment="Renewal price matches the contract.")
    card.locator(".inbox-progress", has_text="1 of 2 approvals").wait_for(timeout=15000)

    # The agent long-polls while Bob decides.
    answers = {}
    poller = threading.Thread(target=lambda: answers.update(wait=agent.wait(request_id, 60)), daemon=True)
    poller.start()

    card.locator("a[data-card]").click()
    page.wait_for_url(f"**/admin/envelopes/approvalrequest/{request_id}/change/")
    progress = page.locator("#request-progress").inner_text()
    assert "1 of 2 approvals" in progress and "alice approved" in progress
    assert "USD 1,250" in page.locator("#payload").inner_text()
    assert not page.locator("#raw-payload pre").is_visible()  # raw JSON one click away
    page.locator("#raw-payload summary").click()
    assert '"registrar": "Gandi"' in page.locator("#raw-payload pre").inner_text()
    page.locator("#raw-payload summary").click()
    page.screenshot(path=REQUEST_SCREENSHOT, full_page=True)
    page.set_viewport_size(PHONE)
    page.screenshot(path=phone_shot(REQUEST_SCREENSHOT), full_page=True)
    page.set_viewport_size(LAPTOP)

    page.fill("#id_comment", "Second approval: renew it.")
    page.click("#action-approve")
    page.wait_for_selector("#request-outcome")
    assert "Approved by bob" in page.locator("#request-outcome").inner_text()
    assert page.locator("#request-form").count() == 0
    approval = ApprovalRequest.objects.get(pk=request_id)
    assert (approval.status, approval.decided_by) == ("approved", str(people["bob"].pk))

    # The agent's long-poll returned with the decision ...
    poller.join(timeout=20)
    answer = answers["wait"]
    assert answer.status_code == 200, answer.text
    decision = answer.json()
    assert (decision["status"], decision["approved_by"]) == ("approved", str(people["bob"].pk))
    assert decision["comments"] == "Second approval: renew it."

    # ... and its webhook receiver got the same payload, signed with the channel's secret.
    delivery = wait_until(lambda: receiver.requests and receiver.requests[-1])
    body = delivery["body"]
    expected = "sha256=" + hmac.new(agent.secret.encode(), body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(delivery["headers"]["X-AIGOS-Signature"], expected)
    assert delivery["headers"]["X-AIGOS-Delivery"] and delivery["headers"]["X-AIGOS-Timestamp"].isdigit()
    posted = json.loads(body)
    assert (posted["request_id"], posted["status"], posted["approved_by"]) == (
        request_id,
        "approved",
        str(people["bob"].pk),
    )

    # Back in the inbox, the decided card is gone.
    page.goto("/admin/")
    assert page.locator(f"article[data-card-id='{request_id}']").count() == 0


def test_the_channel_owner_cannot_approve_on_route_approval(page, live_server, acme):  # noqa: F811
    organization, people = acme
    agent = agent_of(live_server, people["olivia"])
    request_id = agent.submit(title="Delete the old staging bucket", risk_level="critical")
    page.set_viewport_size(LAPTOP)
    sign_in(page, "olivia")
    card = page.locator(f"article[data-card-id='{request_id}']")
    assert "You own this agent: separation of duties" in card.inner_text()
    card.locator("a[data-card]").click()
    page.wait_for_url(f"**/admin/envelopes/approvalrequest/{request_id}/change/")
    approve = page.locator("#action-approve")
    assert approve.is_disabled() and page.locator("#action-reject").is_disabled()
    assert "You own this agent: separation of duties." in page.locator("#request-why").inner_text()
    assert approve.get_attribute("title") == "You own this agent: separation of duties"

    # Forcing the button is refused by the service, not just hidden by the page.
    approve.evaluate("button => { button.disabled = false; }")
    with page.expect_response(lambda r: r.request.method == "POST") as posted:
        approve.click()
    assert posted.value.status == 403
    assert "Not recorded: you own this agent: separation of duties." in page.locator(".messagelist").inner_text()
    assert ApprovalRequest.objects.get(pk=request_id).status == "pending"

    # Someone else decides while the page is open: it shows who decided and when, without a reload.
    act(organization.pk, request_id, people["alice"], "reject", comment="Keep the bucket: legal hold.")
    page.locator("#request-outcome", has_text="Rejected by alice").wait_for(timeout=15000)
    assert page.locator("#request-form").count() == 0
    assert "Keep the bucket: legal hold." in page.locator("#request-decision").inner_text()
    assert page.locator("#request-state").inner_text() == "Rejected"


def test_request_changes_reaches_the_agent_as_a_tweak_event(page, live_server, acme):  # noqa: F811
    organization, people = acme
    agent = agent_of(live_server, people["olivia"])
    request_id = agent.submit(
        title="Raise the ad budget",
        type="spend_approval",
        payload={"amount": 5000, "currency": "EUR", "campaign": "spring"},
        tweak_allowed=True,
    )
    page.set_viewport_size(LAPTOP)
    sign_in(page, "alice")
    page.goto(f"/admin/envelopes/approvalrequest/{request_id}/change/")
    page.keyboard.press("c")  # request changes: the comment box takes the focus
    assert page.evaluate("document.activeElement.id") == "id_comment"
    page.click("#action-request_changes")  # no text yet: refused in the page, nothing sent
    assert page.locator("#comment-error").is_visible()
    assert not Tweak.objects.filter(request_id=request_id).exists()

    page.fill("#id_comment", "Cap it at EUR 2,000 and resubmit.")
    page.keyboard.press("Control+Enter")
    page.wait_for_selector("#request-open-tweak")
    assert "Cap it at EUR 2,000" in page.locator("#request-open-tweak").inner_text()
    assert page.locator("#action-withdraw_tweak").is_enabled()

    # The agent sees the open change request on the request and on its long-poll.
    detail = agent.get(request_id)
    assert detail["status"] == "pending"
    assert detail["tweak"]["request_text"] == "Cap it at EUR 2,000 and resubmit."
    event = agent.wait(request_id, 1)
    assert event.status_code == 200
    assert (event.json()["event"], event.json()["requested_by"]) == ("tweak_requested", str(people["alice"].pk))

    # The agent answers with a new version; both cards become one thread.
    child = agent.submit(
        title="Raise the ad budget",
        type="spend_approval",
        payload={"amount": 2000, "currency": "EUR", "campaign": "spring"},
        parent_envelope_id=request_id,
    )
    page.goto(f"/admin/envelopes/approvalrequest/{child}/change/")
    history = page.locator("#request-history").inner_text()
    assert "(this card)" in history and "payload.amount" in history
    assert "5000" in history and "2000" in history


def test_the_agents_page_invites_an_agent_and_rotates_its_key(page, live_server, acme, settings):  # noqa: F811
    settings.PUBLIC_BASE_URL = live_server.url
    organization, people = acme
    page.set_viewport_size(LAPTOP)
    sign_in(page, "olivia")
    page.goto("/agents")
    assert "You have no channels yet" in page.locator("#content").inner_text()
    page.click("#new-invite")
    token = page.locator("#invite-token").inner_text().strip()
    command = page.locator("#register-command").inner_text()
    assert command == (
        f"curl -X POST {live_server.url}/api/register-channel -H 'Content-Type: application/json' "
        f'-d \'{{"invite_token": "{token}"}}\''
    )
    assert "expires" in page.locator("#agents-secret").inner_text()
    page.screenshot(path=AGENTS_SCREENSHOT.replace(".png", "_invite.png"), full_page=True)

    agent = Agent(live_server.url, token, "domain-bot")
    agent.submit(title="Renew example.com")
    page.goto("/agents")
    row = page.locator(f"#channel-{agent.channel_id}")
    assert "domain-bot" in row.inner_text() and "1 waiting" in row.inner_text()
    assert token not in page.content()  # shown once
    page.screenshot(path=AGENTS_SCREENSHOT, full_page=True)

    page.once("dialog", lambda dialog: dialog.accept())
    page.click(f"#rotate-{agent.channel_id}")
    new_key = page.locator("#channel-key").inner_text().strip()
    assert authenticate_channel_key(agent.key) is None and authenticate_channel_key(new_key) is not None
    page.set_viewport_size(PHONE)
    page.goto("/agents")
    page.screenshot(path=phone_shot(AGENTS_SCREENSHOT), full_page=True)
