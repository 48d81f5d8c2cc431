"""The request page in a real browser: a decided choice names who chose it, and version 2 of a
change-request thread shows the approver what was asked to change (issue 11, items 7 and 8)."""

import pytest

from envelopes.requests.decisions import act
from governance.choices import Role
from governance.services.people import create_person, ensure_organization
from tests.browser import page  # noqa: F401  (fixture)
from tests.test_inbox_browser import PASSWORD, sign_in
from tests.test_inbox_requests import ask, open_channel

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def people():
    organization = ensure_organization("acme", "Acme")
    owner = create_person(organization, "olivia", roles=[Role.GOVERNANCE_APPROVER], must_change_password=False)
    alice = create_person(
        organization,
        "alice",
        password=PASSWORD,
        roles=[Role.GOVERNANCE_APPROVER],
        first_name="Alice",
        last_name="Approver",
        must_change_password=False,
    )
    return owner, alice


def test_choosing_an_option_shows_who_chose_it_as_the_approval(page, people):  # noqa: F811
    owner, _ = people
    channel, _ = open_channel(owner)
    approval = ask(
        channel, type="choice", title="Pick a region", payload={"options": [{"id": "use", "label": "US East"}]}
    )
    sign_in(page, "alice")
    page.goto(f"/admin/envelopes/approvalrequest/{approval.pk}/change/")
    assert page.locator("#request-progress").inner_text().count("Nobody yet") == 1
    page.check("input[name=choice]")
    page.get_by_role("button", name="Choose").click()
    page.locator(".request-votes").wait_for()
    acted = page.locator(".request-votes").inner_text()
    assert "Alice Approver (alice)" in acted and "made the choice" in acted
    assert "Chose US East" in " ".join(page.locator("#request-outcome, .request-answer").all_inner_texts())


def test_version_two_shows_the_approver_what_was_asked_to_change(page, people):  # noqa: F811
    owner, alice = people
    channel, _ = open_channel(owner)
    first = ask(channel, tweak_allowed=True, payload={"budget": 900})
    act(channel.organization_id, first.pk, alice, "request_changes", comment="Lower the budget to 500.")
    second = ask(channel, tweak_allowed=True, payload={"budget": 500}, parent_envelope_id=str(first.pk))
    sign_in(page, "alice")
    page.goto(f"/admin/envelopes/approvalrequest/{second.pk}/change/")
    answers = page.locator("#request-answers")
    assert answers.is_visible()
    assert "Lower the budget to 500." in answers.inner_text() and "alice" in answers.inner_text()
    assert page.get_by_role("button", name="Approve").is_visible()  # decided right next to it
