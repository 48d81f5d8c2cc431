"""Installing the governed runtime over HTTP: install tokens, confirmation and status, with
wallet sessions from real Sign-In with Ethereum (edut's installer; docs/installs.md)."""

from datetime import timedelta

import pytest
from django.utils import timezone
from eth_account import Account
from rest_framework.test import APIClient

from evidence.models import AuditEvent
from evidence.services.verification import verify_chain
from governance.choices import AvailabilityState, InstallState, MembershipStatus, PrincipalRole
from governance.models import Device, InstallToken
from governance.services.install_rules import device_chain_id
from governance.services.runtime_packages import register_package, withdraw_package
from tests.install_world import (
    DOMAIN,
    ORG_ROOT_ID,
    PRINCIPAL_ID,
    make_owner,
    open_wallet_session,
    set_governance_entitlement,
)

pytestmark = pytest.mark.django_db

TOKEN_URL = "/governance/install/token"
CONFIRM_URL = "/governance/install/confirm"
STATUS_URL = "/governance/install/status"
DEVICE = "desktop-7f6f3a9b"
PACKAGE_HASH = "sha256:" + "09f6d64f" * 8
POLICY_HASH = "sha256:" + "f10419ac" * 8
RECEIPT_HASH = "sha256:" + "8102d437" * 8


@pytest.fixture(autouse=True)
def _our_domain(settings):
    settings.PUBLIC_BASE_URL = f"https://{DOMAIN}"
    settings.MANDATE_SIWE_DOMAIN = ""
    settings.MANDATE_SIWE_CHAIN_IDS = [1]


@pytest.fixture
def package():
    return register_package(
        platform="macos",
        rollout_channel="stable",
        runtime_version="1.0.0",
        package_url="https://downloads.example/runtime/governance/1.0.0/macos-arm64.pkg",
        package_hash=PACKAGE_HASH,
        policy_hash=POLICY_HASH,
        created_by="tests",
    )


@pytest.fixture
def owner():
    return make_owner()


def launcher(account) -> APIClient:
    """A client holding a wallet session for ``account``."""
    client = APIClient()
    session = open_wallet_session(client, account)
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {session}")
    return client


def token_request(owner, **changes) -> dict:
    body = {
        "wallet": owner.wallet,
        "org_root_id": ORG_ROOT_ID,
        "principal_id": PRINCIPAL_ID,
        "principal_role": "org_root_owner",
        "device_id": DEVICE,
        "launcher_version": "0.2.0",
        "platform": "macos",
        "current_runtime_version": "0.0.0",
    }
    body.update(changes)
    return {key: value for key, value in body.items() if value is not None}


def confirm_request(owner, issued: dict, **changes) -> dict:
    body = {
        "install_token": issued["install_token"],
        "wallet": owner.wallet,
        "device_id": DEVICE,
        "entitlement_id": issued["entitlement_id"],
        "package_hash": issued["package"]["package_hash"],
        "runtime_version": issued["package"]["runtime_version"],
        "installed_at": timezone.now().isoformat().replace("+00:00", "Z"),
        "launcher_receipt_hash": RECEIPT_HASH,
    }
    body.update(changes)
    return {key: value for key, value in body.items() if value is not None}


def assert_refused(answer, status: int, code: str):
    assert answer.status_code == status, answer.content
    body = answer.json()
    assert body["error"] == code and body["code"] == code, body
    assert body["correlation_id"].startswith("req_")
    assert answer["X-Correlation-ID"] == body["correlation_id"]


def issue(client, owner, **changes) -> dict:
    answer = client.post(TOKEN_URL, token_request(owner, **changes), format="json")
    assert answer.status_code == 200, answer.content
    return answer.json()


# --- the install token ------------------------------------------------------------------


def test_owner_gets_a_single_use_install_token_with_the_signed_package(owner, package):
    client = launcher(owner.account)
    answer = client.post(TOKEN_URL, token_request(owner), format="json")
    assert answer.status_code == 200, answer.content
    body = answer.json()
    assert body["install_token"].startswith("git_") and len(body["install_token"]) == 30
    assert body["wallet"] == owner.wallet
    assert body["entitlement_id"].startswith("ent_")
    expires = timezone.datetime.fromisoformat(body["install_token_expires_at"].replace("Z", "+00:00"))
    assert timedelta(minutes=14) < expires - timezone.now() <= timedelta(minutes=15)
    assert body["package"] == {
        "runtime_version": "1.0.0",
        "package_url": package.package_url,
        "package_hash": PACKAGE_HASH,
        "signature": package.signature,
        "signer_key_id": package.signer_key_id,
        "policy_hash": POLICY_HASH,
        "rollout_channel": "stable",
    }
    assert answer["X-Correlation-ID"].startswith("req_")
    # kept hashed only
    assert not InstallToken.objects.filter(token_hash=body["install_token"]).exists()
    assert Device.objects.get(wallet=owner.wallet, device_id=DEVICE).install_state == InstallState.NOT_INSTALLED


def test_newest_package_of_the_device_channel_is_offered(owner, package):
    for version in ("1.10.0", "1.9.0"):
        register_package(
            platform="macos",
            rollout_channel="stable",
            runtime_version=version,
            package_url=f"https://downloads.example/{version}.pkg",
            package_hash=PACKAGE_HASH,
            policy_hash=POLICY_HASH,
        )
    register_package(
        platform="macos",
        rollout_channel="beta",
        runtime_version="2.0.0-rc.1",
        package_url="https://downloads.example/beta.pkg",
        package_hash=PACKAGE_HASH,
        policy_hash=POLICY_HASH,
    )
    client = launcher(owner.account)
    assert issue(client, owner)["package"]["runtime_version"] == "1.10.0"
    assert issue(client, owner, rollout_channel="beta")["package"]["runtime_version"] == "2.0.0-rc.1"


def test_no_wallet_session_is_401(owner, package):
    answer = APIClient().post(TOKEN_URL, token_request(owner), format="json")
    assert_refused(answer, 401, "wallet_session_invalid")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION="Bearer mws_abcdefgh_notasecret")
    assert_refused(client.post(TOKEN_URL, token_request(owner), format="json"), 401, "wallet_session_invalid")


def test_session_of_another_wallet_is_403_wallet_mismatch(owner, package):
    client = launcher(Account.create())
    assert_refused(client.post(TOKEN_URL, token_request(owner), format="json"), 403, "wallet_mismatch")


def test_payment_wallet_cannot_install_403_wallet_not_owner(owner, package):
    client = launcher(owner.payment_account)
    body = token_request(owner, wallet=owner.payment_account.address)
    assert_refused(client.post(TOKEN_URL, body, format="json"), 403, "wallet_not_owner")


@pytest.mark.parametrize("membership", [MembershipStatus.SUSPENDED, MembershipStatus.REVOKED])
def test_inactive_membership_is_403(membership, package):
    owner = make_owner(membership=membership)
    assert_refused(
        launcher(owner.account).post(TOKEN_URL, token_request(owner), format="json"), 403, "membership_inactive"
    )


def test_member_who_is_not_root_owner_is_403_role_not_permitted(package):
    owner = make_owner(role=PrincipalRole.MEMBER)
    client = launcher(owner.account)
    assert_refused(client.post(TOKEN_URL, token_request(owner), format="json"), 403, "role_not_permitted")
    assert_refused(
        client.post(TOKEN_URL, token_request(owner, principal_role="member"), format="json"), 403, "role_not_permitted"
    )


def test_claimed_role_must_be_the_principals(owner, package):
    client = launcher(owner.account)
    assert_refused(
        client.post(TOKEN_URL, token_request(owner, principal_role="org_admin"), format="json"),
        403,
        "role_not_permitted",
    )


@pytest.mark.parametrize("entitlement", [None, "inactive", "expired"])
def test_without_an_active_governance_entitlement_is_403(entitlement, package):
    owner = make_owner(entitlement=entitlement)
    answer = launcher(owner.account).post(TOKEN_URL, token_request(owner), format="json")
    assert_refused(answer, 403, "entitlement_inactive")
    assert set(answer.json()) == {"error", "code", "correlation_id", "reason"}


def test_parked_device_is_403_availability_parked(owner, package):
    client = launcher(owner.account)
    issue(client, owner)
    Device.objects.filter(device_id=DEVICE).update(availability_state=AvailabilityState.PARKED)
    assert_refused(client.post(TOKEN_URL, token_request(owner), format="json"), 403, "availability_parked")


def test_unknown_platform_is_404_package_not_found(owner, package):
    client = launcher(owner.account)
    answer = client.post(TOKEN_URL, token_request(owner, platform="plan9"), format="json")
    assert_refused(answer, 404, "package_not_found")
    withdraw_package(package)
    assert_refused(client.post(TOKEN_URL, token_request(owner), format="json"), 404, "package_not_found")


def test_unknown_root_or_principal_is_404(owner, package):
    client = launcher(owner.account)
    body = token_request(owner, org_root_id="org.nobody.root")
    assert_refused(client.post(TOKEN_URL, body, format="json"), 404, "organization_not_found")
    body = token_request(owner, principal_id="human.nobody")
    assert_refused(client.post(TOKEN_URL, body, format="json"), 404, "principal_not_found")


@pytest.mark.parametrize(
    "changes",
    [
        {"surprise": "field"},
        {"device_id": None},
        {"device_id": ""},
        {"device_id": 7},
        {"device_id": "a" * 300},
        {"wallet": "0x1234"},
        {"org_root_id": "org acme"},
        {"launcher_version": ["0.2.0"]},
    ],
)
def test_malformed_token_request_is_400_invalid_request(owner, package, changes):
    answer = launcher(owner.account).post(TOKEN_URL, token_request(owner, **changes), format="json")
    assert_refused(answer, 400, "invalid_request")
    assert not Device.objects.exists()


def test_body_that_is_not_an_object_is_400(owner, package):
    client = launcher(owner.account)
    assert_refused(client.post(TOKEN_URL, ["wallet"], format="json"), 400, "invalid_request")
    answer = client.generic("POST", TOKEN_URL, b"{not json", content_type="application/json")
    assert_refused(answer, 400, "invalid_request")


def test_wrong_checksum_is_400_address_checksum_invalid(owner, package):
    wallet = owner.wallet
    flipped = wallet[:2] + "".join(c.swapcase() if c.isalpha() else c for c in wallet[2:])
    answer = launcher(owner.account).post(TOKEN_URL, token_request(owner, wallet=flipped), format="json")
    assert_refused(answer, 400, "address_checksum_invalid")


def test_lower_case_wallet_is_accepted(owner, package):
    body = issue(launcher(owner.account), owner, wallet=owner.wallet.lower())
    assert body["wallet"] == owner.wallet


# --- confirmation --------------------------------------------------------------------------


def test_confirm_activates_governance_and_starts_the_lease(owner, package):
    client = launcher(owner.account)
    issued = issue(client, owner)
    answer = client.post(CONFIRM_URL, confirm_request(owner, issued), format="json")
    assert answer.status_code == 200, answer.content
    body = answer.json()
    assert body["status"] == "governance_active"
    assert (body["wallet"], body["device_id"], body["runtime_version"]) == (owner.wallet, DEVICE, "1.0.0")
    assert body["entitlement_id"] == issued["entitlement_id"]
    assert body["activated_at"].endswith("Z")
    device = Device.objects.get(wallet=owner.wallet, device_id=DEVICE)
    assert device.install_state == InstallState.ACTIVE
    assert device.availability_state == AvailabilityState.ACTIVE
    assert device.lease_expires_at - timezone.now() > timedelta(days=29)
    assert (device.policy_hash, device.launcher_receipt_hash) == (POLICY_HASH, RECEIPT_HASH)


def test_confirming_the_same_install_again_is_idempotent(owner, package):
    client = launcher(owner.account)
    issued = issue(client, owner)
    body = confirm_request(owner, issued)
    first = client.post(CONFIRM_URL, body, format="json")
    again = client.post(CONFIRM_URL, body, format="json")
    assert first.status_code == again.status_code == 200
    assert first.json() == again.json()
    chain = device_chain_id(Device.objects.get(device_id=DEVICE))
    assert AuditEvent.objects.filter(chain_id=chain, event_type="install.confirmed").count() == 1


def test_used_token_for_another_install_is_409_stale(owner, package):
    client = launcher(owner.account)
    issued = issue(client, owner)
    assert client.post(CONFIRM_URL, confirm_request(owner, issued), format="json").status_code == 200
    again = confirm_request(owner, issued, launcher_receipt_hash="sha256:" + "ab" * 32)
    assert_refused(client.post(CONFIRM_URL, again, format="json"), 409, "install_token_stale")


def test_expired_token_is_409_stale(owner, package):
    client = launcher(owner.account)
    issued = issue(client, owner)
    InstallToken.objects.update(expires_at=timezone.now() - timedelta(seconds=1))
    answer = client.post(CONFIRM_URL, confirm_request(owner, issued), format="json")
    assert_refused(answer, 409, "install_token_stale")
    assert Device.objects.get(device_id=DEVICE).install_state == InstallState.NOT_INSTALLED


@pytest.mark.parametrize(
    "changes",
    [
        {"install_token": "git_01J9B6A97WQG8GNYM4ZBX8E2NQ"},
        {"device_id": "laptop-other"},
        {"entitlement_id": "ent_someone_else"},
    ],
)
def test_token_not_issued_for_this_install_is_409_stale(owner, package, changes):
    client = launcher(owner.account)
    issued = issue(client, owner)
    answer = client.post(CONFIRM_URL, confirm_request(owner, issued, **changes), format="json")
    assert_refused(answer, 409, "install_token_stale")


def test_token_of_another_wallet_is_409_stale():
    first, second = make_owner(), make_owner(organization=None, org_root_id="org.other.root")
    register_package(
        platform="macos",
        rollout_channel="stable",
        runtime_version="1.0.0",
        package_url="https://downloads.example/1.pkg",
        package_hash=PACKAGE_HASH,
        policy_hash=POLICY_HASH,
    )
    issued = issue(launcher(first.account), first)
    other = launcher(second.account)
    answer = other.post(CONFIRM_URL, confirm_request(second, issued), format="json")
    assert_refused(answer, 409, "install_token_stale")


@pytest.mark.parametrize(
    "changes",
    [{"package_hash": "sha256:" + "00" * 32}, {"runtime_version": "0.9.0"}],
)
def test_other_package_is_409_package_hash_mismatch_and_verify_failed(owner, package, changes):
    client = launcher(owner.account)
    issued = issue(client, owner)
    answer = client.post(CONFIRM_URL, confirm_request(owner, issued, **changes), format="json")
    assert_refused(answer, 409, "package_hash_mismatch")
    device = Device.objects.get(device_id=DEVICE)
    assert device.install_state == InstallState.VERIFY_FAILED
    assert AuditEvent.objects.filter(chain_id=device_chain_id(device), event_type="install.failed").count() == 1
    # the token was not spent: the right package still confirms
    assert client.post(CONFIRM_URL, confirm_request(owner, issued), format="json").status_code == 200


def test_withdrawn_package_or_other_policy_is_409_policy_mismatch(owner, package):
    client = launcher(owner.account)
    issued = issue(client, owner)
    answer = client.post(CONFIRM_URL, confirm_request(owner, issued, policy_hash="sha256:" + "11" * 32), format="json")
    assert_refused(answer, 409, "policy_mismatch")
    assert Device.objects.get(device_id=DEVICE).install_state == InstallState.POLICY_MISMATCH
    withdraw_package(package)
    answer = client.post(CONFIRM_URL, confirm_request(owner, issued), format="json")
    assert_refused(answer, 409, "policy_mismatch")


def test_malformed_launcher_receipt_is_400_and_receipt_invalid(owner, package):
    client = launcher(owner.account)
    issued = issue(client, owner)
    answer = client.post(CONFIRM_URL, confirm_request(owner, issued, launcher_receipt_hash="md5:abc"), format="json")
    assert_refused(answer, 400, "launcher_receipt_invalid")
    assert Device.objects.get(device_id=DEVICE).install_state == InstallState.RECEIPT_INVALID


def test_entitlement_lapsing_before_confirm_is_403_and_recorded(owner, package):
    client = launcher(owner.account)
    issued = issue(client, owner)
    set_governance_entitlement(owner.organization, owner.wallet, "inactive")
    answer = client.post(CONFIRM_URL, confirm_request(owner, issued), format="json")
    assert_refused(answer, 403, "entitlement_inactive")
    assert Device.objects.get(device_id=DEVICE).install_state == InstallState.ENTITLEMENT_INACTIVE


@pytest.mark.parametrize(
    "changes",
    [
        {"installed_at": "yesterday"},
        {"installed_at": (timezone.now() + timedelta(hours=1)).isoformat()},
        {"launcher_receipt_hash": None},
        {"extra": "x"},
    ],
)
def test_malformed_confirm_is_400_invalid_request(owner, package, changes):
    client = launcher(owner.account)
    issued = issue(client, owner)
    answer = client.post(CONFIRM_URL, confirm_request(owner, issued, **changes), format="json")
    assert_refused(answer, 400, "invalid_request")
    assert Device.objects.get(device_id=DEVICE).install_state == InstallState.NOT_INSTALLED


def test_confirm_with_another_wallets_session_is_403(owner, package):
    issued = issue(launcher(owner.account), owner)
    stranger = launcher(Account.create())
    assert_refused(stranger.post(CONFIRM_URL, confirm_request(owner, issued), format="json"), 403, "wallet_mismatch")


# --- status ---------------------------------------------------------------------------------


def test_status_reports_exactly_the_reference_fields(owner, package):
    client = launcher(owner.account)
    issued = issue(client, owner)
    before = client.get(STATUS_URL, {"wallet": owner.wallet, "device_id": DEVICE})
    assert before.status_code == 200, before.content
    assert before.json()["activation_status"] == "not_installed"
    client.post(CONFIRM_URL, confirm_request(owner, issued), format="json")
    answer = client.get(STATUS_URL, {"wallet": owner.wallet, "device_id": DEVICE})
    assert answer.json() == {
        "wallet": owner.wallet,
        "org_root_id": ORG_ROOT_ID,
        "principal_id": PRINCIPAL_ID,
        "principal_role": "org_root_owner",
        "membership_status": "active",
        "identity_assurance_level": "onramp_attested",
        "entitlement_status": "active",
        "access_class": "connected",
        "availability_state": "active",
        "activation_status": "active",
        "latest_runtime_version": "1.0.0",
        "policy_hash": POLICY_HASH,
    }
    assert answer["X-Correlation-ID"].startswith("req_")


def test_status_errors(owner, package):
    client = launcher(owner.account)
    assert_refused(client.get(STATUS_URL, {"wallet": owner.wallet, "device_id": DEVICE}), 404, "device_not_found")
    assert_refused(client.get(STATUS_URL, {"wallet": owner.wallet}), 400, "invalid_request")
    assert_refused(
        client.get(STATUS_URL, {"wallet": owner.wallet, "device_id": DEVICE, "x": "1"}), 400, "invalid_request"
    )
    other = Account.create().address
    assert_refused(client.get(STATUS_URL, {"wallet": other, "device_id": DEVICE}), 403, "wallet_mismatch")
    assert_refused(
        APIClient().get(STATUS_URL, {"wallet": owner.wallet, "device_id": DEVICE}), 401, "wallet_session_invalid"
    )


# --- evidence ------------------------------------------------------------------------------


def test_each_install_is_evidence_on_the_devices_own_chain(owner, package):
    client = launcher(owner.account)
    issued = issue(client, owner)
    client.post(CONFIRM_URL, confirm_request(owner, issued), format="json")
    device = Device.objects.get(device_id=DEVICE)
    chain = device_chain_id(device)
    events = list(AuditEvent.objects.filter(chain_id=chain).order_by("sequence_no"))
    assert [event.event_type for event in events] == ["install.token_issued", "install.confirmed"]
    confirmed = events[-1].payload
    assert confirmed["device_id"] == DEVICE and confirmed["wallet"] == owner.wallet
    assert confirmed["package_hash"] == PACKAGE_HASH and confirmed["policy_hash"] == POLICY_HASH
    assert confirmed["launcher_receipt_hash"] == RECEIPT_HASH and confirmed["runtime_version"] == "1.0.0"
    assert verify_chain(chain).valid


def test_the_correlation_id_is_in_the_request_log(owner, package, caplog):
    client = launcher(owner.account)
    with caplog.at_level("INFO", logger="mandate.request"):
        answer = client.post(TOKEN_URL, token_request(owner, platform="plan9"), format="json")
    logged = [record for record in caplog.records if getattr(record, "path", "") == TOKEN_URL]
    assert logged and logged[-1].correlation_id == answer.json()["correlation_id"]
    assert logged[-1].status == 404
