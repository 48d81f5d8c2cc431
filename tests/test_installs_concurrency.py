"""Installs under real parallel requests through two server processes on PostgreSQL: a
token confirms one install once, and a new device is made once."""

import pytest
from rest_framework.test import APIClient

from evidence.models import AuditEvent
from evidence.services.verification import verify_chain, verify_ledger
from governance.models import Device, InstallToken
from governance.services.install_rules import device_chain_id
from governance.services.runtime_packages import register_package
from tests.install_world import DOMAIN, make_owner, open_wallet_session
from tests.test_entitlements_concurrency import in_parallel, two_servers
from tests.test_installs import POLICY_HASH, confirm_request, token_request

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def owner_session(settings):
    settings.PUBLIC_BASE_URL = f"https://{DOMAIN}"
    settings.MANDATE_SIWE_DOMAIN = ""
    register_package(
        platform="macos",
        rollout_channel="stable",
        runtime_version="1.0.0",
        package_url="https://downloads.example/1.0.0.pkg",
        package_hash="sha256:" + "09" * 32,
        policy_hash=POLICY_HASH,
    )
    owner = make_owner()
    return owner, open_wallet_session(APIClient(), owner.account)


def test_parallel_token_requests_for_a_new_device_make_it_once(owner_session):
    owner, session = owner_session
    with two_servers("install-tokens") as urls:
        answers = in_parallel(urls, session, [("/governance/install/token", {"json": token_request(owner)})] * 8)
    assert [a.status_code for a in answers] == [200] * 8, [a.content for a in answers]
    assert len({a.json()["install_token"] for a in answers}) == 8
    assert Device.objects.count() == 1 and InstallToken.objects.count() == 8


def test_parallel_confirms_of_one_token_activate_once(owner_session):
    owner, session = owner_session
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {session}")
    issued = client.post("/governance/install/token", token_request(owner), format="json").json()
    same = confirm_request(owner, issued)
    reinstall = client.post("/governance/install/token", token_request(owner), format="json").json()
    different = [confirm_request(owner, reinstall, launcher_receipt_hash="sha256:" + f"{n:02x}" * 32) for n in range(6)]
    with two_servers("install-confirm") as urls:
        answers = in_parallel(urls, session, [("/governance/install/confirm", {"json": same})] * 6)
        rivals = in_parallel(urls, session, [("/governance/install/confirm", {"json": body}) for body in different])
    # the same confirmation, repeated: every answer is the one activation
    assert [a.status_code for a in answers] == [200] * 6, [a.content for a in answers]
    assert len({a.json()["activated_at"] for a in answers}) == 1
    # rival confirmations of one token (a reinstall): one wins, the others find it used
    assert sorted(a.status_code for a in rivals) == [200] + [409] * 5, [a.content for a in rivals]
    assert {a.json()["code"] for a in rivals if a.status_code == 409} == {"install_token_stale"}
    device = Device.objects.get()
    chain = device_chain_id(device)
    assert AuditEvent.objects.filter(chain_id=chain, event_type="install.confirmed").count() == 2
    assert verify_chain(chain).valid and verify_ledger().valid
