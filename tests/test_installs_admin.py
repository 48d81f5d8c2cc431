"""The installer's console pages: runtime packages signed on registration (or verified when an
external signer signed them), signer keys, principals with their wallets, devices."""

import base64

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from governance.choices import Role
from governance.models import Principal, PrincipalWallet, RuntimePackage, SignerKey
from governance.services.runtime_packages import descriptor, published_keys, verify_signature
from tests.install_world import make_active_device, make_owner

pytestmark = pytest.mark.django_db

PACKAGE = {
    "platform": "linux",
    "rollout_channel": "stable",
    "runtime_version": "1.2.0",
    "package_url": "https://downloads.example/runtime/1.2.0/linux-x64.tar.gz",
    "package_hash": "sha256:" + "ab" * 32,
    "policy_hash": "sha256:" + "cd" * 32,
}


@pytest.fixture
def platform_admin(make_person):
    return make_person(roles=[Role.PLATFORM_ADMIN], username="platform-admin")


@pytest.fixture
def operator(make_person):
    return make_person(roles=[Role.PLATFORM_OPERATOR], username="ops")


def raw_public(private) -> str:
    raw = private.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def test_a_platform_admin_registers_a_package_that_mandate_signs(client, platform_admin):
    client.force_login(platform_admin)
    answer = client.post("/admin/governance/runtimepackage/add/", {**PACKAGE, "signature": "", "signer_key_id": ""})
    assert answer.status_code == 302, answer.content.decode()
    package = RuntimePackage.objects.get()
    assert package.created_by == "platform-admin"
    fields = {**PACKAGE, "signer_key_id": package.signer_key_id}
    assert verify_signature(package.signer_key_id, descriptor(fields), package.signature, published_keys())
    listing = client.get("/admin/governance/runtimepackage/").content.decode()
    assert "1.2.0" in listing and "linux" in listing


def test_an_external_signers_package_is_verified_before_it_is_listed(client, platform_admin):
    client.force_login(platform_admin)
    signer = ed25519.Ed25519PrivateKey.generate()
    answer = client.post(
        "/admin/governance/signerkey/add/",
        {"key_id": "governance-signer-2026-01", "public_key": raw_public(signer), "description": "release team"},
    )
    assert answer.status_code == 302, answer.content.decode()
    assert SignerKey.objects.get().key_id == "governance-signer-2026-01"
    good = "ed25519:" + signer.sign(descriptor({**PACKAGE, "signer_key_id": "governance-signer-2026-01"})).hex()
    forged = "ed25519:" + signer.sign(b"something else").hex()
    refused = client.post(
        "/admin/governance/runtimepackage/add/",
        {**PACKAGE, "signature": forged, "signer_key_id": "governance-signer-2026-01"},
    )
    assert refused.status_code == 200 and "does not verify" in refused.content.decode()
    assert not RuntimePackage.objects.exists()
    answer = client.post(
        "/admin/governance/runtimepackage/add/",
        {**PACKAGE, "signature": good, "signer_key_id": "governance-signer-2026-01"},
    )
    assert answer.status_code == 302, answer.content.decode()
    package = RuntimePackage.objects.get()
    assert (package.signature, package.signer_key_id) == (good, "governance-signer-2026-01")
    assert any(key["kid"] == "governance-signer-2026-01" for key in published_keys())


def test_a_bad_signer_key_or_duplicate_version_says_why(client, platform_admin):
    client.force_login(platform_admin)
    answer = client.post("/admin/governance/signerkey/add/", {"key_id": "bad-key", "public_key": "not-a-key"})
    assert answer.status_code == 200 and "Ed25519 public key" in answer.content.decode()
    client.post("/admin/governance/runtimepackage/add/", {**PACKAGE, "signature": "", "signer_key_id": ""})
    again = client.post("/admin/governance/runtimepackage/add/", {**PACKAGE, "signature": "", "signer_key_id": ""})
    assert again.status_code == 200 and "already has runtime 1.2.0" in again.content.decode()
    assert RuntimePackage.objects.count() == 1


def test_operators_cannot_register_packages(client, operator):
    client.force_login(operator)
    assert client.get("/admin/governance/runtimepackage/").status_code == 403
    assert client.post("/admin/governance/runtimepackage/add/", PACKAGE).status_code == 403


def test_an_operator_adds_a_principal_with_ownership_and_payment_wallets(client, operator, organization):
    client.force_login(operator)
    owner_wallet, payment_wallet = "0x" + "1" * 40, "0x" + "2" * 40
    answer = client.post(
        "/admin/governance/principal/add/",
        {
            "principal_id": "human.ada",
            "display_name": "Ada",
            "role": "org_root_owner",
            "membership_status": "active",
            "identity_assurance_level": "onramp_attested",
            "wallets-TOTAL_FORMS": "2",
            "wallets-INITIAL_FORMS": "0",
            "wallets-MIN_NUM_FORMS": "0",
            "wallets-MAX_NUM_FORMS": "1000",
            "wallets-0-address": owner_wallet,
            "wallets-0-purpose": "ownership",
            "wallets-1-address": payment_wallet,
            "wallets-1-purpose": "payment",
        },
    )
    assert answer.status_code == 302, answer.content.decode()
    principal = Principal.objects.get(principal_id="human.ada")
    assert principal.organization == organization
    assert set(PrincipalWallet.objects.values_list("address", "purpose")) == {
        (owner_wallet, "ownership"),
        (payment_wallet, "payment"),
    }


def test_devices_are_listed_for_their_organization_only(client, operator, organization):
    ours = make_owner("org.ours.root", organization=organization)
    theirs = make_owner("org.theirs.root")
    make_active_device(ours, "laptop-ours")
    make_active_device(theirs, "laptop-theirs")
    client.force_login(operator)
    listing = client.get("/admin/governance/device/").content.decode()
    assert "laptop-ours" in listing and "laptop-theirs" not in listing
    device_page = client.get(f"/admin/governance/device/{ours.organization.devices.get().pk}/change/")
    assert device_page.status_code == 200 and "hash chain" in device_page.content.decode()
