"""Held actions in a real browser (Chromium via Playwright): an operator opens the held action's
card from the inbox, reads the plan, approves it learning its domain; a viewer sees why they
cannot decide."""

import os

import pytest

from envelopes.models import GateApproval
from evidence.services.verification import verify_chain
from governance.choices import Role
from governance.services.people import create_person, ensure_organization
from tests.browser import page  # noqa: F401  (fixture)
from tests.held_actions import hold_action
from tests.test_inbox_browser import PASSWORD, sign_in

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

INBOX_SCREENSHOT = os.environ.get("MANDATE_HELD_INBOX_SCREENSHOT", "/tmp/held_inbox.png")
ACTION_SCREENSHOT = os.environ.get("MANDATE_HELD_ACTION_SCREENSHOT", "/tmp/held_action.png")
DECIDED_SCREENSHOT = os.environ.get("MANDATE_HELD_DECIDED_SCREENSHOT", "/tmp/held_action_decided.png")
LAPTOP = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}


@pytest.fixture
def acme():
    organization = ensure_organization("acme", "Acme")
    for username, role, first in (("otto", Role.PLATFORM_OPERATOR, "Otto"), ("val", Role.PLATFORM_VIEWER, "Val")):
        create_person(
            organization,
            username,
            password=PASSWORD,
            roles=[role],
            first_name=first,
            last_name="Tester",
            must_change_password=False,
        )
    return organization


def test_an_operator_approves_a_held_action_from_the_inbox_learning_its_domain(page, acme):  # noqa: F811
    held = hold_action(acme)
    approval = held.gate_approval
    page.set_viewport_size(LAPTOP)
    sign_in(page, "otto")

    card = page.locator(f"article.inbox-card[data-card-id='{held.pk}']")
    card_text = card.inner_text()
    for text in ("Held action: http_delete v1.0.0", "high risk", "agent-ops", "api.newvendor.io", "you can decide"):
        assert text in card_text, text
    assert "expires in" in card_text
    page.screenshot(path=INBOX_SCREENSHOT, full_page=True)

    card.locator("a[data-card]").click()
    page.wait_for_url(f"**/admin/envelopes/envelope/{held.pk}/action/")
    for heading in ("Why it was held", "The plan that will run", "The request body", "Audit chain"):
        assert page.get_by_role("heading", name=heading, exact=True).is_visible(), heading
    plan = page.locator("#plan").inner_text()
    for text in ("http_delete", "builtin:http_api", "https://api.newvendor.io/v1/items/inv-42", "ITEMS_TOKEN"):
        assert text in plan, text
    assert approval.plan_hash in plan
    assert not page.locator("#raw-plan pre").is_visible()  # raw JSON is one click away
    page.locator("#raw-plan summary").click()
    assert '"provider_module_digest": "builtin:http_api"' in page.locator("#raw-plan pre").inner_text()
    assert page.locator("#id_learn_domain").input_value() == "api.newvendor.io"  # prefilled
    page.screenshot(path=ACTION_SCREENSHOT, full_page=True)

    # Deny needs a reason: the page says so before anything is sent.
    page.click("#action-deny")
    assert page.locator("#comment-error").is_visible()
    assert GateApproval.objects.get(pk=held.pk).state == "pending"

    page.check("#id_learn_domain_on")
    page.click("#action-approve")
    page.wait_for_selector("#action-outcome")
    # The stored plan ran as the approval committed (the gate's hook): its target does not
    # resolve here, so it failed — the page says so, and who approved.
    assert "Approved, execution failed by Otto Tester (otto)" in page.locator("#action-outcome").inner_text()
    assert page.locator("#action-learned-domain").inner_text() == "api.newvendor.io"
    assert page.locator("#action-form").count() == 0
    assert "Chain intact." in page.locator("#integrity-verdict").inner_text()
    stored = GateApproval.objects.get(pk=held.pk)
    assert (stored.state, stored.decided_by, stored.learn_domain) == ("failed", "otto", "api.newvendor.io")
    assert verify_chain(str(held.pk)).valid
    page.screenshot(path=DECIDED_SCREENSHOT, full_page=True)

    page.set_viewport_size(PHONE)  # on a phone: why it was held, then the decision, then the plan
    why = page.locator("#action-why-held").bounding_box()
    decision = page.locator("#action-decision").bounding_box()
    plan_box = page.locator("#plan").bounding_box()
    assert why["y"] < decision["y"] < plan_box["y"]
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]


def test_a_viewer_sees_why_they_cannot_decide_a_held_action(page, acme):  # noqa: F811
    held = hold_action(acme)
    page.set_viewport_size(LAPTOP)
    sign_in(page, "val")
    card = page.locator(f"article.inbox-card[data-card-id='{held.pk}']")
    assert "Deciding held actions needs platform.operator or platform.admin" in card.inner_text()
    assert "you can decide" not in card.inner_text()
    card.locator("a[data-card]").click()
    page.wait_for_url(f"**/admin/envelopes/envelope/{held.pk}/action/")
    assert page.locator("#action-form").count() == 0
    assert page.locator("#action-decision button.review-approve").is_disabled()
    assert page.locator("#action-decision button.review-reject").is_disabled()
    assert "needs platform.operator or platform.admin" in page.locator("#action-why").inner_text()
    page.keyboard.press("a")  # no shortcut arms a disabled decision
    assert GateApproval.objects.get(pk=held.pk).state == "pending"
