"""The inbox in a real browser: an escalation appears, a reviewer opens it and decides."""

import os

import pytest

from envelopes.models import Envelope
from evidence.services.verification import verify_chain
from governance.choices import Role
from governance.services.people import create_person, ensure_organization
from tests.browser import page  # noqa: F401  (fixture)
from tests.test_reviews import declare_demo_authority, submit

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

PASSWORD = "a-Long-enough-passw0rd"
INBOX_SCREENSHOT = os.environ.get("MANDATE_INBOX_SCREENSHOT", "/tmp/inbox.png")
REVIEW_SCREENSHOT = os.environ.get("MANDATE_REVIEW_SCREENSHOT", "/tmp/review.png")
DECIDED_SCREENSHOT = os.environ.get("MANDATE_DECIDED_SCREENSHOT", "/tmp/review_decided.png")


def sign_in(tab, username: str) -> None:
    tab.context.clear_cookies()
    tab.goto("/admin/")
    assert "/accounts/login/" in tab.url
    tab.fill("input[name=login]", username)
    tab.fill("input[name=password]", PASSWORD)
    tab.click("button[type=submit]")
    tab.wait_for_url("**/admin/")


@pytest.fixture
def reviewer():
    organization = declare_demo_authority(ensure_organization("acme", "Acme"))
    create_person(
        organization,
        "reviewer",
        password=PASSWORD,
        roles=[Role.GOVERNANCE_REVIEWER],
        staff=True,
        must_change_password=False,
    )
    return organization


def test_reviewer_approves_an_escalation_from_the_inbox(page, reviewer):  # noqa: F811
    organization = reviewer
    submit(organization, confidence=0.9, consequence={"type": "monetary", "amount": 25000, "currency": "GBP"})
    escalation = submit(organization, confidence=0.42)
    page.set_viewport_size({"width": 1280, "height": 900})

    sign_in(page, "reviewer")
    card = page.locator("article.inbox-card", has_text="Confidence below threshold")
    assert card.count() == 1
    card_text = card.inner_text()
    for expected in ("agent-payments-prod", "surf-payment-release", "GBP 500", "0.42", "threshold 0.85", "high risk"):
        assert expected in card_text
    assert card.locator("time[data-age]").get_attribute("title")  # the absolute time on hover
    assert page.locator("article.inbox-card").count() == 2
    page.screenshot(path=INBOX_SCREENSHOT, full_page=True)

    card.locator("a[data-card]").click()
    page.wait_for_url(f"**/admin/envelopes/envelope/{escalation.pk}/review/")
    for section in ("What is asked", "Identity", "Submitted", "Resolved authority", "Evaluation", "Integrity"):
        assert page.get_by_role("heading", name=section, exact=True).is_visible()
    assert "Chain intact." in page.locator("#integrity-verdict").inner_text()
    assert page.locator("table.review-chain tbody tr").count() == len(escalation.audit_event_ids)
    assert not page.locator("#raw-envelope pre").is_visible()  # raw JSON is one click away
    page.screenshot(path=REVIEW_SCREENSHOT, full_page=True)

    page.fill("#id_notes", "Confidence is low but the payee and amount check out.")
    page.click("#review-approve")
    page.wait_for_selector("#review-outcome")
    outcome = page.locator("#review-outcome").inner_text()
    assert "Approved by reviewer" in outcome
    assert page.locator("#review-state").inner_text() == "Closed"
    assert "Chain intact." in page.locator("#integrity-verdict").inner_text()
    assert page.locator("#review-form").count() == 0
    page.screenshot(path=DECIDED_SCREENSHOT)

    envelope = Envelope.objects.get(pk=escalation.pk)
    assert (envelope.state, envelope.review_decision, envelope.reviewer_id) == ("closed", "APPROVED", "reviewer")
    assert envelope.review_notes == "Confidence is low but the payee and amount check out."
    assert envelope.outcome == "escalate"
    assert verify_chain(
        envelope.chain_id,
        expected_length=len(envelope.audit_event_ids),
        expected_final_hash=envelope.final_event_hash,
        expected_terminal_types={"ENVELOPE_CLOSED"},
    ).valid

    # Back in the inbox, only the other escalation waits.
    page.goto("/admin/")
    assert page.locator("article.inbox-card").count() == 1


def test_reviewer_rejects_from_the_keyboard_and_must_say_why(page, reviewer):  # noqa: F811
    escalation = submit(reviewer, confidence=0.3)
    page.set_viewport_size({"width": 1280, "height": 900})
    sign_in(page, "reviewer")

    page.keyboard.press("j")  # focus the first card
    page.keyboard.press("Enter")
    page.wait_for_url(f"**/admin/envelopes/envelope/{escalation.pk}/review/")

    page.keyboard.press("r")  # reject: the notes box takes the focus
    assert page.evaluate("document.activeElement.id") == "id_notes"
    page.click("#review-reject")  # no reason yet: refused in the page, nothing sent
    assert page.locator("#notes-error").is_visible()
    assert Envelope.objects.get(pk=escalation.pk).state == "awaiting_review"

    page.fill("#id_notes", "Wrong beneficiary account.")
    page.keyboard.press("Control+Enter")
    page.wait_for_selector("#review-outcome")
    assert "Rejected by reviewer" in page.locator("#review-outcome").inner_text()
    envelope = Envelope.objects.get(pk=escalation.pk)
    assert (envelope.review_decision, envelope.review_notes) == ("REJECTED", "Wrong beneficiary account.")
