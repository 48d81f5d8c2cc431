"""The console laid out in a real browser: the envelope list fits a 1,366 px screen, times read
in one format on every page."""

import re

import pytest

from envelopes.models import ApprovalRequest
from governance.choices import Role
from governance.services.people import create_person, ensure_organization
from tests.browser import page  # noqa: F401  (fixture)
from tests.factories import surface
from tests.test_inbox_browser import PASSWORD, sign_in
from tests.test_inbox_requests import ask, open_channel
from tests.test_reviews import declare_demo_authority, submit

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

# "2026-12-07 12:33:38 GMT+1" (with the reader's zone), or "12:33:38" alone in tables; never AM/PM.
ONE_FORMAT = re.compile(
    r"^(\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}( (?!AM|PM)[A-Z]{2,5}([+-]\d{1,2}(:\d{2})?)?)?|\d{2}:\d{2}:\d{2})$"
)


@pytest.fixture
def console():
    organization = declare_demo_authority(ensure_organization("acme", "Acme"))
    owner = create_person(organization, "owner", roles=[Role.GOVERNANCE_APPROVER], must_change_password=False)
    create_person(
        organization,
        "reviewer",
        password=PASSWORD,
        roles=[Role.GOVERNANCE_REVIEWER, Role.GOVERNANCE_APPROVER, Role.PLATFORM_VIEWER],
        must_change_password=False,
    )
    channel, _ = open_channel(owner, name="a-channel-with-a-rather-long-name-for-the-list")
    ask(channel, title="Transfer a-very-long-domain-name-for-layout-testing.example.com to Cloudflare")
    submit(organization, confidence=0.42, agent_id="agent-payments-prod")
    return organization


def test_the_envelope_list_fits_1366_px_and_shows_what_each_envelope_is(page, console):  # noqa: F811
    page.set_viewport_size({"width": 1366, "height": 900})
    sign_in(page, "reviewer")
    page.goto("/admin/envelopes/envelope/")
    results = page.locator("#changelist .results")
    overflow = results.evaluate("el => el.scrollWidth - el.clientWidth")
    assert overflow <= 0, f"the envelope list overflows by {overflow} px"
    assert page.evaluate("document.documentElement.scrollWidth <= document.documentElement.clientWidth")
    rows = page.locator("#result_list tbody tr")
    assert rows.count() == 2
    text = page.locator("#result_list").inner_text()
    assert "via a-channel-with-a-rather-long-name-for-the-list" in text and "Waiting" in text
    assert "Confidence below threshold" in text and "-\n" not in text


def test_times_read_in_one_format_on_the_inbox_request_and_control_plane_pages(page, console, live_server):  # noqa: F811
    declared = surface(console, key="surf-times", version=1, approved_by="carol")
    request = ApprovalRequest.objects.get()
    # A reader in the US locale and a European time zone: the format is still the console's.
    context = page.context.browser.new_context(
        base_url=live_server.url, locale="en-US", timezone_id="Europe/Paris", viewport={"width": 1366, "height": 900}
    )
    page = context.new_page()
    sign_in(page, "reviewer")
    seen = 0
    for path in (
        f"/admin/envelopes/approvalrequest/{request.pk}/change/",
        f"/admin/controlplane/surface/{declared.pk}/change/",
    ):
        page.goto(path)
        for text in page.locator("time[data-local], time[data-cp-local]").all_inner_texts():
            assert ONE_FORMAT.match(text.strip()), f"{path}: {text!r}"
            seen += 1
    context.close()
    assert seen >= 2
