"""The live inbox in Chromium: cards arrive and leave without a reload over the stream
(``governance.asgi`` under a real server), the tab title counts them, desktop notifications
are opt-in and only for cards you can decide, escalation cards say whether you can decide,
and without the stream the page polls."""

import os

import pytest

from governance.choices import Role
from governance.services.people import create_person, ensure_organization
from tests.asgi_server import running_server, session_cookie
from tests.browser import chromium_tab, page  # noqa: F401  (fixture)
from tests.factories import declare_demo_authority
from tests.test_inbox_requests import ask, open_channel
from tests.test_reviews import submit as evaluate

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

LIVE_SCREENSHOT = os.environ.get("MANDATE_INBOX_LIVE_SCREENSHOT", "/tmp/inbox_live.png")
POLL_SECONDS = 4  # inbox.js's POLL_MS
# A stand-in for the browser's Notification: records what would be shown; the permission, once
# granted, lasts across page loads as a browser's does.
FAKE_NOTIFICATION = """
window.__notes = [];
class FakeNotification {
  constructor(title, options) { window.__notes.push({ title: title, body: (options || {}).body || "" }); }
  close() {}
}
FakeNotification.permission = sessionStorage.getItem("fake-permission") || "default";
FakeNotification.requestPermission = function () {
  FakeNotification.permission = "granted";
  sessionStorage.setItem("fake-permission", "granted");
  return Promise.resolve("granted");
};
window.Notification = FakeNotification;
"""


@pytest.fixture
def server(transactional_db, monkeypatch):
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")  # Playwright's loop runs in this thread
    with running_server() as running:
        yield running


@pytest.fixture
def tab(server):
    with chromium_tab(server.url) as opened:
        yield opened


@pytest.fixture
def acme():
    organization = declare_demo_authority(ensure_organization("acme", "Acme"))
    return {
        "organization": organization,
        "owner": create_person(organization, "olivia", roles=[Role.GOVERNANCE_APPROVER]),
        "alice": create_person(organization, "alice", roles=[Role.GOVERNANCE_APPROVER]),
        "carol": create_person(organization, "carol", roles=[Role.GOVERNANCE_APPROVER]),
        "rita": create_person(organization, "rita", roles=[Role.GOVERNANCE_REVIEWER]),
    }


def sign_in(tab, base_url: str, person) -> None:
    tab.context.clear_cookies()
    cookies = [{"name": name, "value": value, "url": base_url} for name, value in session_cookie(person).items()]
    tab.context.add_cookies(cookies)


def open_inbox(tab, mode: str = "stream") -> None:
    tab.goto("/admin/")
    tab.wait_for_selector(f"#mandate-inbox[data-live-mode={mode}]")


def wait_for_title(tab, title: str, timeout: float = 5000) -> None:
    tab.wait_for_function("title => document.title === title", arg=title, timeout=timeout)


def card(tab, title: str):
    return tab.locator("article.inbox-card", has_text=title)


def test_a_card_arrives_and_leaves_without_a_reload_and_the_title_counts_them(tab, server, acme):
    from envelopes.requests.decisions import act

    tab.set_viewport_size({"width": 1280, "height": 900})
    channel = open_channel(acme["owner"])[0]
    ask(channel, title="Scale the web tier")
    sign_in(tab, server.url, acme["alice"])
    open_inbox(tab)
    assert tab.title() == "(1) Inbox · Mandate"
    tab.evaluate("window.__same_page = true")

    arrived = ask(channel, title="Rotate the database password", risk_level="high")
    # Polling is off while the stream is open: only the stream can bring it, and before a poll would.
    card(tab, "Rotate the database password").wait_for(timeout=POLL_SECONDS * 1000 - 500)
    wait_for_title(tab, "(2) Inbox · Mandate")
    assert "you can decide" in card(tab, "Rotate the database password").inner_text()
    assert tab.locator("#mandate-inbox .inbox-count").inner_text() == "2"
    tab.screenshot(path=LIVE_SCREENSHOT, full_page=True)

    act(acme["organization"].pk, arrived.pk, acme["carol"], "approve")  # decided by someone else
    card(tab, "Rotate the database password").wait_for(state="detached", timeout=POLL_SECONDS * 1000 - 500)
    wait_for_title(tab, "(1) Inbox · Mandate")
    assert tab.evaluate("window.__same_page") is True  # never reloaded
    assert tab.get_attribute("#mandate-inbox", "data-live-mode") == "stream"


def test_an_escalation_arrives_saying_who_can_decide_it(tab, server, acme):
    sign_in(tab, server.url, acme["alice"])
    open_inbox(tab)
    evaluate(acme["organization"], confidence=0.4)
    escalation = card(tab, "Confidence below threshold")
    escalation.wait_for(timeout=POLL_SECONDS * 1000 - 500)
    assert "Deciding escalations needs platform.admin or governance.reviewer" in escalation.inner_text()
    assert "you can decide" not in escalation.inner_text()
    wait_for_title(tab, "(1) Inbox · Mandate")

    sign_in(tab, server.url, acme["rita"])
    open_inbox(tab)
    assert "you can decide" in card(tab, "Confidence below threshold").inner_text()


def test_desktop_notifications_are_opt_in_remembered_and_only_for_cards_you_can_decide(tab, server, acme):
    tab.add_init_script(FAKE_NOTIFICATION)
    theirs = open_channel(acme["owner"], name="olivia-bot")[0]
    own = open_channel(acme["alice"], name="alice-bot")[0]
    sign_in(tab, server.url, acme["alice"])
    open_inbox(tab)
    button = tab.locator("button[data-notify]")
    assert button.inner_text() == "Notify me of new cards"

    ask(theirs, title="Before opting in")
    card(tab, "Before opting in").wait_for()
    assert tab.evaluate("window.__notes") == []  # nothing until asked for

    button.click()
    tab.wait_for_function("() => document.querySelector('button[data-notify]').textContent === 'Notifications on'")
    assert tab.evaluate("localStorage.getItem('mandate.inbox.notify')") == "on"
    assert button.get_attribute("aria-pressed") == "true"

    ask(theirs, title="Approve the vendor contract", summary="Net 30, renews yearly.")
    tab.wait_for_function("() => window.__notes.length === 1")
    assert tab.evaluate("window.__notes") == [
        {"title": "Approve the vendor contract", "body": "Approval request · Net 30, renews yearly."}
    ]

    ask(own, title="My own agent asks")  # she owns this agent: separation of duties, no say
    evaluate(acme["organization"], confidence=0.4)  # an escalation: she may read it, not decide it
    card(tab, "My own agent asks").wait_for()
    card(tab, "Confidence below threshold").wait_for()
    assert "separation of duties" in card(tab, "My own agent asks").inner_text()
    assert len(tab.evaluate("window.__notes")) == 1

    tab.reload()
    tab.wait_for_selector("#mandate-inbox[data-live-mode=stream]")
    assert tab.locator("button[data-notify]").inner_text() == "Notifications on"  # remembered


def test_without_event_source_the_inbox_polls(tab, server, acme):
    tab.add_init_script("delete window.EventSource")
    channel = open_channel(acme["owner"])[0]
    sign_in(tab, server.url, acme["alice"])
    open_inbox(tab, mode="poll")
    assert tab.title() == "Inbox · Mandate"
    ask(channel, title="Renew the TLS certificate")
    card(tab, "Renew the TLS certificate").wait_for(timeout=(POLL_SECONDS + 4) * 1000)
    wait_for_title(tab, "(1) Inbox · Mandate")

    tab.keyboard.press("/")  # the search box, from the keyboard
    assert tab.evaluate("document.activeElement.name") == "q"
    tab.keyboard.type("tls")
    tab.keyboard.press("Enter")
    tab.wait_for_url("**/admin/?q=tls*")
    assert tab.locator("article.inbox-card").count() == 1


def test_where_the_stream_is_not_served_the_inbox_polls(page, live_server, acme):  # noqa: F811
    # The live server is WSGI: Django answers the stream's URL with 204, EventSource gives up.
    channel = open_channel(acme["owner"])[0]
    sign_in(page, live_server.url, acme["alice"])
    open_inbox(page, mode="poll")
    ask(channel, title="Renew the TLS certificate")
    card(page, "Renew the TLS certificate").wait_for(timeout=(POLL_SECONDS + 4) * 1000)
    wait_for_title(page, "(1) Inbox · Mandate")
