"""An org admin makes an offline renewal bundle in the console, in a real browser, and the
launcher applies the signed payload copied from the page."""

import os
from datetime import timedelta

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from governance.choices import AccessClass, Role
from governance.models import Device, RenewalBundle
from governance.services.people import create_person
from tests.browser import page  # noqa: F401  (fixture)
from tests.install_world import make_active_device, make_owner, open_wallet_session
from tests.test_controlplane_admin_browser import PASSWORD, sign_in
from tests.test_wallet_sessions import _our_domain  # noqa: F401  (an autouse fixture)

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

ADD_PATH = "/admin/governance/renewalbundle/add/"
SCREENSHOT = os.environ.get("MANDATE_SCREENSHOT", "/tmp/renewal_bundle.png")


def test_org_admin_creates_a_renewal_bundle_and_the_launcher_applies_the_copied_payload(page):  # noqa: F811
    owner = make_owner()
    device = make_active_device(owner, lease_days=2)
    create_person(owner.organization, "orgadmin", password=PASSWORD, roles=[Role.PLATFORM_ADMIN])
    renewed_until = (timezone.now() + timedelta(days=60)).replace(second=0, microsecond=0)

    sign_in(page, ADD_PATH, "orgadmin")
    # A renewal beyond the horizon is refused with the service's reason, and nothing is made.
    page.select_option("#id_principal", label="human.joshua")
    page.select_option("#id_wallet", value=owner.wallet)
    page.fill("#id_renewed_until", (timezone.now() + timedelta(days=9999)).strftime("%Y-%m-%dT%H:%M"))
    page.click("#renewal-create")
    assert "days ahead" in page.locator(".errornote").inner_text()
    assert not RenewalBundle.objects.exists()

    page.fill("#id_renewed_until", renewed_until.strftime("%Y-%m-%dT%H:%M"))
    page.click("#renewal-create")
    bundle_id = page.locator("#renewal-bundle-id").inner_text()
    signed_payload = page.locator("#renewal-signed-payload").inner_text()
    assert bundle_id.startswith("rb_") and signed_payload.startswith("base64:")
    page.screenshot(path=SCREENSHOT, full_page=True)

    launcher = APIClient()
    launcher.credentials(HTTP_AUTHORIZATION=f"Bearer {open_wallet_session(launcher, owner.account)}")
    answer = launcher.post(
        "/governance/lease/offline-renew",
        {
            "wallet": owner.wallet,
            "org_root_id": "org.acme.root",
            "principal_id": "human.joshua",
            "renewal_bundle": {"bundle_id": bundle_id, "signed_payload": signed_payload},
        },
        format="json",
    )
    assert answer.status_code == 200, answer.content
    assert answer.json() == {
        "status": "renewal_applied",
        "availability_state": "active",
        "renewed_until": renewed_until.strftime("%Y-%m-%dT%H:%M:00Z"),
    }
    device = Device.objects.get(pk=device.pk)
    assert (device.lease_expires_at, device.access_class) == (renewed_until, AccessClass.OFFLINE)

    # The list shows it among the applied bundles, and its page the same payload, read-only.
    page.goto("/admin/governance/renewalbundle/?applied=yes")
    page.get_by_role("link", name=bundle_id).click()
    assert page.locator("#renewal-signed-payload").inner_text() == signed_payload
    assert page.locator("input[name=_save]").count() == 0
    page.goto("/admin/governance/renewalbundle/?applied=no")
    assert page.get_by_role("link", name=bundle_id).count() == 0
