"""The control-plane console in a real browser: upload a bundle, preview, apply, approve."""

import os
from urllib.parse import urlsplit

import pytest

from controlplane.models import Surface
from governance.choices import Role
from governance.services.people import create_person, ensure_organization
from tests.browser import page  # noqa: F401  (fixture)
from tests.test_controlplane_admin import SMALL_BUNDLE

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

PASSWORD = "a-Long-enough-passw0rd"
SCREENSHOT = os.environ.get("MANDATE_SCREENSHOT", "/tmp/cp_surface.png")


def sign_in(tab, path: str, username: str) -> None:
    """Open ``path`` signed out, sign in on allauth's page, and land back on ``path``."""
    tab.context.clear_cookies()
    tab.goto(path)
    assert "/accounts/login/" in tab.url
    tab.fill("input[name=login]", username)
    tab.fill("input[name=password]", PASSWORD)
    tab.click("button[type=submit]")
    tab.wait_for_url(f"**{path}")


def test_operator_uploads_previews_and_applies_then_another_admin_approves(page):  # noqa: F811
    organization = ensure_organization("acme", "Acme")
    for username in ("uploader", "checker"):
        create_person(organization, username, password=PASSWORD, roles=[Role.PLATFORM_ADMIN])

    # The uploader previews the bundle: nothing is written yet.
    sign_in(page, "/admin/controlplane/surface/bundle/", "uploader")
    page.fill("#id_bundle_text", SMALL_BUNDLE)
    page.click("#cp-preview")
    entries = page.locator("#cp-plan-entries")
    for key in ("bs-payments", "proc-payment-release", "surf-payment-release"):
        assert entries.get_by_text(key).is_visible()
    assert not Surface.objects.exists()

    # Apply, then follow the result to the new surface: the uploader may not approve it.
    page.click("#cp-apply")
    assert "Bundle applied: 3 created" in page.locator(".messagelist").inner_text()
    page.locator("#cp-apply-results").get_by_role("link", name="surf-payment-release").click()
    approve = page.locator("#cp-approve")
    assert approve.is_disabled()
    assert "maker-checker" in page.locator("#cp-approve-why").inner_text()

    # Another admin approves it, and v1 becomes the version evaluation uses.
    surface_path = urlsplit(page.url).path
    sign_in(page, surface_path, "checker")
    assert page.locator("#cp-approve").is_enabled()
    page.click("#cp-approve")
    page.wait_for_url(f"**{surface_path}")
    assert "is now active" in page.locator(".messagelist").inner_text()
    row = page.locator("#cp-versions tbody tr").first
    assert "active" in row.inner_text() and "checker" in row.inner_text()
    assert "Evaluation uses v1" in page.locator(".cp-lifecycle").inner_text()
    page.screenshot(path=SCREENSHOT, full_page=True)

    surface = Surface.objects.get(key="surf-payment-release")
    assert (surface.status, surface.submitted_by, surface.approved_by) == ("active", "uploader", "checker")
