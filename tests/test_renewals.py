"""Offline renewal bundles over HTTP: an org admin creates one, a launcher applies it once,
and anyone verifies it with only the published keys (docs/renewals.md)."""

import base64
import itertools
import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import rfc8785
from django.utils import timezone
from rest_framework.test import APIClient

from evidence.choices import KeyAlgorithm
from evidence.models import AuditEvent
from evidence.services.keys import rotate_key
from governance.choices import AccessClass, AvailabilityState, MembershipStatus, Role, WalletPurpose
from governance.models import Device, PrincipalWallet, RenewalBundle, SignerKey
from governance.services.people import create_person
from governance.services.tokens import issue_token
from tests.install_world import (
    make_active_device,
    make_owner,
    open_wallet_session,
    set_governance_entitlement,
)
from tests.test_wallet_sessions import _our_domain, assert_refused  # noqa: F401  (an autouse fixture)

pytestmark = pytest.mark.django_db

CREATE_URL = "/governance/renewal-bundles"
APPLY_URL = "/governance/lease/offline-renew"
KEYS_URL = "/governance/signer-keys"
DOCS = Path(__file__).resolve().parent.parent / "docs" / "renewals.md"


@pytest.fixture
def owner():
    return make_owner()


@pytest.fixture
def device(owner):
    return make_active_device(owner)


PEOPLE = itertools.count(1)


def admin_api(organization, *roles) -> APIClient:
    """An API client with a token of a new person of ``organization`` holding ``roles``."""
    person = create_person(organization, f"admin{next(PEOPLE)}", roles=roles)
    _, secret = issue_token(person, "renewals", roles)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
    return client


@pytest.fixture
def admin(owner):
    return admin_api(owner.organization, Role.PLATFORM_ADMIN)


@pytest.fixture
def launcher(owner):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {open_wallet_session(client, owner.account)}")
    return client


def at(moment: datetime) -> str:
    return moment.astimezone(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def create(admin, owner, **fields):
    body = {
        "org_root_id": owner.organization.org_root_id,
        "principal_id": owner.principal.principal_id,
        "wallet": owner.wallet,
        "renewed_until": at(timezone.now() + timedelta(days=90)),
    }
    body.update(fields)
    return admin.post(CREATE_URL, {k: v for k, v in body.items() if v is not None}, format="json")


def created(admin, owner, **fields) -> dict:
    answer = create(admin, owner, **fields)
    assert answer.status_code == 201, answer.content
    return answer.json()


def apply(launcher, owner, bundle: dict, **fields):
    body = {
        "wallet": owner.wallet,
        "org_root_id": owner.organization.org_root_id,
        "principal_id": owner.principal.principal_id,
        "renewal_bundle": {"bundle_id": bundle["bundle_id"], "signed_payload": bundle["signed_payload"]},
    }
    body.update(fields)
    return launcher.post(APPLY_URL, body, format="json")


def document_of(signed_payload: str) -> dict:
    return json.loads(base64.b64decode(signed_payload.removeprefix("base64:")))


def encoded(document, *, canonical: bool = True) -> str:
    raw = rfc8785.dumps(document) if canonical else json.dumps(document, indent=1).encode()
    return "base64:" + base64.b64encode(raw).decode()


def with_payload(bundle: dict, signed_payload: str) -> dict:
    return {**bundle, "signed_payload": signed_payload}


# --- the happy path -----------------------------------------------------------------------


def test_org_admin_creates_a_bundle_and_the_launcher_applies_it(admin, owner, device, launcher):
    renewed_until = timezone.now() + timedelta(days=200)
    bundle = created(admin, owner, renewed_until=at(renewed_until))
    assert re.fullmatch(r"rb_[0-9A-Z]{26}", bundle["bundle_id"])
    assert bundle["renewed_until"] == bundle["valid_until"] == at(renewed_until)
    assert bundle["signed_payload"].startswith("base64:")
    payload = document_of(bundle["signed_payload"])["payload"]
    assert payload == {
        "type": "offline_renewal",
        "bundle_id": bundle["bundle_id"],
        "org_root_id": "org.acme.root",
        "principal_id": "human.joshua",
        "wallet": owner.wallet,
        "renewed_until": at(renewed_until),
        "valid_until": at(renewed_until),
        "issued_at": payload["issued_at"],
        "kid": bundle["signing_key_id"],
    }

    answer = apply(launcher, owner, bundle)
    assert answer.status_code == 200, answer.content
    assert answer.json() == {
        "status": "renewal_applied",
        "availability_state": "active",
        "renewed_until": at(renewed_until),
    }
    assert answer["X-Correlation-ID"].startswith("req_")
    device.refresh_from_db()
    assert (device.availability_state, device.access_class) == (AvailabilityState.ACTIVE, AccessClass.OFFLINE)
    assert device.lease_expires_at == renewed_until.replace(microsecond=0)
    assert RenewalBundle.objects.get(bundle_id=bundle["bundle_id"]).applied_at is not None


def test_issuing_and_applying_leave_evidence_on_the_org_and_device_chains(admin, owner, device, launcher):
    bundle = created(admin, owner)
    issued = AuditEvent.objects.get(chain_id=f"renewals:{owner.organization.pk}")
    assert issued.event_type == "renewal_bundle_issued"
    assert issued.performer_type == "person" and issued.payload["bundle_id"] == bundle["bundle_id"]
    assert apply(launcher, owner, bundle).status_code == 200
    applied = AuditEvent.objects.get(chain_id=f"device:{device.pk}", event_type="offline_renewal_applied")
    assert (applied.performer_type, applied.performer_id) == ("wallet", owner.wallet)
    assert applied.payload["bundle_id"] == bundle["bundle_id"]
    assert applied.payload["previous_availability_state"] == "active"


def test_a_parked_device_is_revived_until_the_renewal(admin, owner, launcher):
    parked = make_active_device(
        owner, availability_state=AvailabilityState.PARKED, lease_expires_at=timezone.now() - timedelta(days=2)
    )
    bundle = created(admin, owner)
    assert apply(launcher, owner, bundle).status_code == 200
    parked.refresh_from_db()
    assert parked.availability_state == AvailabilityState.ACTIVE
    assert parked.lease_expires_at == datetime.fromisoformat(bundle["renewed_until"])


def test_a_renewal_never_shortens_a_longer_lease(admin, owner, launcher):
    far = (timezone.now() + timedelta(days=300)).replace(microsecond=0)
    device = make_active_device(owner, lease_expires_at=far)
    bundle = created(admin, owner, renewed_until=at(timezone.now() + timedelta(days=10)))
    answer = apply(launcher, owner, bundle)
    assert answer.status_code == 200 and answer.json()["renewed_until"] == bundle["renewed_until"]
    device.refresh_from_db()
    assert device.lease_expires_at == far and device.access_class == AccessClass.OFFLINE


def test_every_device_of_the_wallet_is_renewed_and_no_other(admin, owner, launcher):
    laptop, desktop = make_active_device(owner, "laptop-1"), make_active_device(owner, "desktop-2")
    other = make_owner("org.other.root", "human.other")
    stranger = make_active_device(other, "laptop-1", lease_days=1)
    bundle = created(admin, owner, renewed_until=at(timezone.now() + timedelta(days=120)))
    assert apply(launcher, owner, bundle).status_code == 200
    for renewed in (laptop, desktop):
        renewed.refresh_from_db()
        assert renewed.lease_expires_at == datetime.fromisoformat(bundle["renewed_until"])
    stranger.refresh_from_db()
    assert stranger.lease_expires_at < timezone.now() + timedelta(days=2)
    assert stranger.access_class == AccessClass.CONNECTED


def test_valid_until_may_come_before_renewed_until(admin, owner, device, launcher):
    valid_until = timezone.now() + timedelta(days=3)
    bundle = created(admin, owner, valid_until=at(valid_until))
    assert bundle["valid_until"] == at(valid_until)
    assert document_of(bundle["signed_payload"])["payload"]["valid_until"] == at(valid_until)
    assert apply(launcher, owner, bundle).status_code == 200


# --- single use ----------------------------------------------------------------------------


def test_applying_a_bundle_twice_is_409_renewal_bundle_used(admin, owner, device, launcher):
    bundle = created(admin, owner)
    assert apply(launcher, owner, bundle).status_code == 200
    Device.objects.filter(pk=device.pk).update(availability_state=AvailabilityState.PARKED)
    assert_refused(apply(launcher, owner, bundle), 409, "renewal_bundle_used")
    device.refresh_from_db()
    assert device.availability_state == AvailabilityState.PARKED  # the replay changed nothing
    assert AuditEvent.objects.filter(event_type="offline_renewal_applied").count() == 1


# --- tampering and malformation: 400 renewal_bundle_invalid -----------------------------------


def test_a_tampered_payload_is_400_renewal_bundle_invalid(admin, owner, device, launcher):
    bundle = created(admin, owner, renewed_until=at(timezone.now() + timedelta(days=10)))
    document = document_of(bundle["signed_payload"])
    document["payload"]["renewed_until"] = at(timezone.now() + timedelta(days=390))
    assert_refused(apply(launcher, owner, with_payload(bundle, encoded(document))), 400, "renewal_bundle_invalid")
    device.refresh_from_db()
    assert device.access_class == AccessClass.CONNECTED
    assert RenewalBundle.objects.get().applied_at is None


def test_a_tampered_signature_is_400_renewal_bundle_invalid(admin, owner, device, launcher):
    bundle = created(admin, owner)
    document = document_of(bundle["signed_payload"])
    hex_digits = document["signature"].removeprefix("ed25519:")
    flipped = hex_digits[:10] + ("0" if hex_digits[10] != "0" else "1") + hex_digits[11:]
    document["signature"] = "ed25519:" + flipped
    assert_refused(apply(launcher, owner, with_payload(bundle, encoded(document))), 400, "renewal_bundle_invalid")


def test_a_payload_naming_an_unpublished_key_is_400_renewal_bundle_invalid(admin, owner, device, launcher):
    bundle = created(admin, owner)
    document = document_of(bundle["signed_payload"])
    document["payload"]["kid"] = "ed25519-20990101-deadbeef"
    assert_refused(apply(launcher, owner, with_payload(bundle, encoded(document))), 400, "renewal_bundle_invalid")


@pytest.mark.parametrize(
    "signed_payload",
    [
        "",
        "ZXhhbXBsZQ==",  # no base64: prefix
        "base64:ZXhhbXBsZQ==",  # the reference's example: "example"
        "base64:not base64!",
        "base64:" + base64.b64encode(b"\xff\xfe").decode(),  # not UTF-8
        "base64:" + base64.b64encode(b"[" * 2000).decode(),  # deep nesting
        "base64:" + base64.b64encode(b'{"payload": {}, "signature": "ed25519:00"}').decode(),
        "base64:" + "A" * 5000,  # far longer than a bundle
    ],
    ids=["empty", "no-prefix", "reference-example", "bad-base64", "not-utf8", "deep", "empty-payload", "huge"],
)
def test_a_malformed_signed_payload_is_400_renewal_bundle_invalid(admin, owner, device, launcher, signed_payload):
    bundle = created(admin, owner)
    assert_refused(apply(launcher, owner, with_payload(bundle, signed_payload)), 400, "renewal_bundle_invalid")


def test_the_same_document_in_another_encoding_is_400_renewal_bundle_invalid(admin, owner, device, launcher):
    bundle = created(admin, owner)
    reencoded = encoded(document_of(bundle["signed_payload"]), canonical=False)
    assert_refused(apply(launcher, owner, with_payload(bundle, reencoded)), 400, "renewal_bundle_invalid")


def test_an_extra_payload_field_is_400_renewal_bundle_invalid(admin, owner, device, launcher):
    bundle = created(admin, owner)
    document = document_of(bundle["signed_payload"])
    document["payload"]["note"] = "hi"
    assert_refused(apply(launcher, owner, with_payload(bundle, encoded(document))), 400, "renewal_bundle_invalid")


def test_a_malformed_bundle_id_is_400_renewal_bundle_invalid(admin, owner, device, launcher):
    bundle = created(admin, owner)
    assert_refused(apply(launcher, owner, {**bundle, "bundle_id": "rb_nope"}), 400, "renewal_bundle_invalid")


# --- binding -----------------------------------------------------------------------------------


def test_another_bundles_id_with_this_payload_is_400_renewal_bundle_invalid(admin, owner, device, launcher):
    first, second = created(admin, owner), created(admin, owner)
    assert_refused(apply(launcher, owner, {**first, "bundle_id": second["bundle_id"]}), 400, "renewal_bundle_invalid")


def test_a_bundle_for_another_principal_is_400_renewal_bundle_invalid(admin, owner, device):
    colleague = make_owner(principal_id="human.colleague", organization=owner.organization)
    make_active_device(colleague, "colleague-laptop")
    colleagues_launcher = APIClient()
    colleagues_launcher.credentials(
        HTTP_AUTHORIZATION=f"Bearer {open_wallet_session(colleagues_launcher, colleague.account)}"
    )
    bundle = created(admin, owner)  # issued for human.joshua's wallet
    answer = apply(colleagues_launcher, colleague, bundle)
    assert_refused(answer, 400, "renewal_bundle_invalid")
    answer = apply(colleagues_launcher, colleague, bundle, wallet=colleague.wallet, principal_id="human.joshua")
    assert_refused(answer, 400, "renewal_bundle_invalid")


def test_a_bundle_named_for_another_organization_is_400_renewal_bundle_invalid(admin, owner, device, launcher):
    bundle = created(admin, owner)
    assert_refused(apply(launcher, owner, bundle, org_root_id="org.other.root"), 400, "renewal_bundle_invalid")


def test_a_correctly_signed_bundle_mandate_did_not_store_is_400_renewal_bundle_invalid(admin, owner, device, launcher):
    bundle = created(admin, owner)
    RenewalBundle.objects.filter(bundle_id=bundle["bundle_id"]).delete()
    assert_refused(apply(launcher, owner, bundle), 400, "renewal_bundle_invalid")


# --- expiry --------------------------------------------------------------------------------------


def test_a_bundle_applied_after_valid_until_is_400_renewal_bundle_expired(admin, owner, device, launcher, monkeypatch):
    bundle = created(admin, owner, valid_until=at(timezone.now() + timedelta(hours=1)))
    later = timezone.now() + timedelta(hours=2)
    monkeypatch.setattr(timezone, "now", lambda: later)
    assert_refused(apply(launcher, owner, bundle), 400, "renewal_bundle_expired")
    assert RenewalBundle.objects.get().applied_at is None


# --- who may apply -------------------------------------------------------------------------------


def test_a_principal_with_no_device_is_404_device_not_found_and_the_bundle_stays_unused(admin, owner, launcher):
    bundle = created(admin, owner)
    assert_refused(apply(launcher, owner, bundle), 404, "device_not_found")
    assert RenewalBundle.objects.get().applied_at is None
    make_active_device(owner)
    assert apply(launcher, owner, bundle).status_code == 200


def test_without_a_wallet_session_it_is_401(admin, owner, device):
    bundle = created(admin, owner)
    assert apply(APIClient(), owner, bundle).status_code == 401
    stranger = APIClient()
    stranger.credentials(HTTP_AUTHORIZATION="Bearer mws_0000_bogus")
    assert_refused(apply(stranger, owner, bundle), 401, "wallet_session_invalid")


def test_another_wallets_session_is_403_wallet_mismatch(admin, owner, device):
    bundle = created(admin, owner)
    other = make_owner("org.other.root", "human.other")
    others_launcher = APIClient()
    others_launcher.credentials(HTTP_AUTHORIZATION=f"Bearer {open_wallet_session(others_launcher, other.account)}")
    assert_refused(apply(others_launcher, owner, bundle), 403, "wallet_mismatch")


def test_a_wallet_no_longer_owned_is_403_wallet_not_owner(admin, owner, device, launcher):
    bundle = created(admin, owner)
    PrincipalWallet.objects.filter(address=owner.wallet, purpose=WalletPurpose.OWNERSHIP).delete()
    assert_refused(apply(launcher, owner, bundle), 403, "wallet_not_owner")


def test_a_suspended_membership_is_403_membership_inactive(admin, owner, device, launcher):
    bundle = created(admin, owner)
    owner.principal.membership_status = MembershipStatus.SUSPENDED
    owner.principal.save()
    assert_refused(apply(launcher, owner, bundle), 403, "membership_inactive")


def test_an_inactive_governance_entitlement_is_403_entitlement_inactive(admin, owner, device, launcher):
    bundle = created(admin, owner)
    set_governance_entitlement(owner.organization, owner.wallet, "inactive")
    assert_refused(apply(launcher, owner, bundle), 403, "entitlement_inactive")
    assert RenewalBundle.objects.get().applied_at is None


def test_a_renamed_organization_root_is_404_organization_not_found(admin, owner, device, launcher):
    bundle = created(admin, owner)
    owner.organization.org_root_id = "org.acme.renamed"
    owner.organization.save()
    assert_refused(apply(launcher, owner, bundle, org_root_id="org.acme.root"), 404, "organization_not_found")


def test_a_renamed_principal_is_404_principal_not_found(admin, owner, device, launcher):
    bundle = created(admin, owner)
    owner.principal.principal_id = "human.josh"
    owner.principal.save()
    assert_refused(apply(launcher, owner, bundle, principal_id="human.joshua"), 404, "principal_not_found")


# --- the request's shape: 400 invalid_request ------------------------------------------------------


@pytest.mark.parametrize(
    "change",
    [
        {"extra": 1},
        {"renewal_bundle": {"bundle_id": "rb_x", "signed_payload": "base64:", "extra": 1}},
        {"renewal_bundle": "rb_x"},
        {"renewal_bundle": {"bundle_id": "rb_x"}},
        {"wallet": "0x1234"},
        {"wallet": 42},
        {"org_root_id": "Not An Id!"},
        {"principal_id": None},
    ],
    ids=["unknown-field", "unknown-bundle-field", "bundle-not-object", "missing-payload", "short-wallet",
         "number-wallet", "bad-org", "null-principal"],
)  # fmt: skip
def test_a_malformed_request_is_400_invalid_request(admin, owner, device, launcher, change):
    bundle = created(admin, owner)
    assert_refused(apply(launcher, owner, bundle, **change), 400, "invalid_request")


def test_a_missing_field_and_a_non_object_body_are_400_invalid_request(launcher):
    assert_refused(launcher.post(APPLY_URL, {"wallet": "0x" + "1" * 40}, format="json"), 400, "invalid_request")
    assert_refused(launcher.post(APPLY_URL, [1, 2], format="json"), 400, "invalid_request")
    answer = launcher.post(APPLY_URL, b"{not json", content_type="application/json")
    assert_refused(answer, 400, "invalid_request")


def test_a_wrongly_checksummed_wallet_is_400_address_checksum_invalid(admin, owner, device, launcher):
    bundle = created(admin, owner)
    digits = owner.wallet[2:]
    wrong = "0x" + "".join(c.swapcase() if c.isalpha() else c for c in digits)
    if wrong == owner.wallet or wrong[2:] in (digits.lower(), digits.upper()):
        pytest.skip("this address has no letters to mis-case")
    assert_refused(apply(launcher, owner, bundle, wallet=wrong), 400, "address_checksum_invalid")


def test_a_lower_case_wallet_is_the_same_wallet(admin, owner, device, launcher):
    bundle = created(admin, owner, wallet=owner.wallet.lower())
    assert bundle["wallet"] == owner.wallet
    assert apply(launcher, owner, bundle, wallet=owner.wallet.lower()).status_code == 200


# --- creating: who, and what ------------------------------------------------------------------------


def test_creating_needs_a_credential_and_an_admin_or_operator_role(owner):
    assert create(APIClient(), owner).status_code == 401
    assert_refused(create(admin_api(owner.organization, Role.PLATFORM_VIEWER), owner), 403, "permission_denied")
    assert create(admin_api(owner.organization, Role.PLATFORM_OPERATOR), owner).status_code == 201


def test_an_operators_browser_session_creates_bundles(owner):
    person = create_person(owner.organization, "operator", roles=[Role.PLATFORM_OPERATOR])
    client = APIClient()
    client.force_login(person)
    bundle = created(client, owner)
    assert RenewalBundle.objects.get(bundle_id=bundle["bundle_id"]).created_by == "operator"


def test_admins_of_another_organization_cannot_create_bundles_here(owner):
    other = make_owner("org.other.root", "human.other")
    outsider = admin_api(other.organization, Role.PLATFORM_ADMIN)
    assert_refused(create(outsider, owner), 404, "organization_not_found")
    assert_refused(create(outsider, owner, org_root_id=None), 404, "principal_not_found")
    assert not RenewalBundle.objects.exists()


@pytest.mark.parametrize(
    "change, status, code",
    [
        ({"renewed_until": "2020-01-01T00:00:00Z"}, 400, "invalid_request"),
        ({"renewed_until": "tomorrow"}, 400, "invalid_request"),
        ({"renewed_until": "2030-01-01T00:00:00"}, 400, "invalid_request"),  # no offset
        ({"renewed_until": 1767225600}, 400, "invalid_request"),
        ({"valid_until": "2020-01-01T00:00:00Z"}, 400, "invalid_request"),
        ({"principal_id": "human.nobody"}, 404, "principal_not_found"),
        ({"principal_id": 7}, 404, "principal_not_found"),
        ({"wallet": "0x" + "ab" * 20}, 403, "wallet_not_owner"),
        ({"wallet": "not-a-wallet"}, 400, "invalid_request"),
        ({"note": "hi"}, 400, "invalid_request"),
    ],
)
def test_a_refused_creation_says_why(admin, owner, change, status, code):
    assert_refused(create(admin, owner, **change), status, code)


def test_renewed_until_is_bounded_by_the_horizon(admin, owner, settings):
    settings.MANDATE_RENEWAL_MAX_DAYS = 30
    assert_refused(create(admin, owner, renewed_until=at(timezone.now() + timedelta(days=31))), 400, "invalid_request")
    assert create(admin, owner, renewed_until=at(timezone.now() + timedelta(days=29))).status_code == 201


def test_valid_until_may_not_be_after_renewed_until(admin, owner):
    answer = create(
        admin,
        owner,
        renewed_until=at(timezone.now() + timedelta(days=5)),
        valid_until=at(timezone.now() + timedelta(days=6)),
    )
    assert_refused(answer, 400, "invalid_request")


def test_a_payment_wallet_gets_no_bundle(admin, owner):
    assert_refused(create(admin, owner, wallet=owner.payment_account.address), 403, "wallet_not_owner")


def test_a_suspended_principal_gets_no_bundle(admin, owner):
    owner.principal.membership_status = MembershipStatus.SUSPENDED
    owner.principal.save()
    assert_refused(create(admin, owner), 403, "membership_inactive")


# --- the published keys, and verifying offline with them alone ----------------------------------------


def test_signer_keys_are_published_to_anyone(admin, owner):
    bundle = created(admin, owner)  # Mandate's Ed25519 key exists once something was signed
    SignerKey.objects.create(key_id="governance-signer-2026-01", public_key="A" * 43)
    SignerKey.objects.create(key_id="old-signer", public_key="B" * 43, status="retired")
    answer = APIClient().get(KEYS_URL)
    assert answer.status_code == 200
    keys = answer.json()["keys"]
    common = {"kty": "OKP", "crv": "Ed25519", "alg": "EdDSA", "use": "sig"}
    assert [key["kid"] for key in keys] == [bundle["signing_key_id"], "governance-signer-2026-01", "old-signer"]
    assert all(key.items() >= common.items() for key in keys)
    assert keys[0]["signer"] == "mandate"
    assert [(key["x"], key["signer"], key["status"]) for key in keys[1:]] == [
        ("A" * 43, "external", "active"),
        ("B" * 43, "external", "retired"),
    ]


def verify_offline(signed_payload: str, jwks: dict) -> dict:
    """What a launcher does with nothing but the published JWKS and the cryptography library."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    document = json.loads(base64.b64decode(signed_payload.removeprefix("base64:"), validate=True))
    payload = document["payload"]
    key = next(key for key in jwks["keys"] if key["kid"] == payload["kid"])
    public = Ed25519PublicKey.from_public_bytes(base64.urlsafe_b64decode(key["x"] + "=" * (-len(key["x"]) % 4)))
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    public.verify(bytes.fromhex(document["signature"].removeprefix("ed25519:")), canonical)  # raises if forged
    return payload


def test_bundles_verify_offline_with_only_the_published_keys_across_a_rotation(admin, owner, device, launcher):
    from cryptography.exceptions import InvalidSignature

    before = created(admin, owner)
    rotate_key(KeyAlgorithm.ED25519)
    after = created(admin, owner)
    assert before["signing_key_id"] != after["signing_key_id"]

    jwks = APIClient().get(KEYS_URL).json()
    assert [key["kid"] for key in jwks["keys"]] == [before["signing_key_id"], after["signing_key_id"]]
    for bundle in (before, after):
        assert verify_offline(bundle["signed_payload"], jwks)["bundle_id"] == bundle["bundle_id"]

    document = document_of(after["signed_payload"])
    document["payload"]["renewed_until"] = "2099-01-01T00:00:00Z"
    with pytest.raises(InvalidSignature):
        verify_offline(encoded(document), jwks)

    # The bundle signed with the retired key still applies.
    assert apply(launcher, owner, before).status_code == 200


def test_the_verification_snippet_in_the_docs_runs(admin, owner, tmp_path):
    bundle = created(admin, owner)
    jwks = APIClient().get(KEYS_URL).json()
    snippet = re.search(r"```python\n(.*?)```", DOCS.read_text(), re.S)[1]
    (tmp_path / "jwks.json").write_text(json.dumps(jwks))
    namespace = {"__name__": "renewal_check"}
    exec(compile(snippet, str(DOCS), "exec"), namespace)  # noqa: S102 (our own documentation)
    payload = namespace["verify_bundle"](bundle["signed_payload"], json.loads((tmp_path / "jwks.json").read_text()))
    assert payload["bundle_id"] == bundle["bundle_id"]
    document = document_of(bundle["signed_payload"])
    document["payload"]["wallet"] = "0x" + "0" * 40
    with pytest.raises(ValueError):
        namespace["verify_bundle"](encoded(document), jwks)


# --- parallel applies: exactly one wins (two server processes on PostgreSQL) ---------------------------


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_parallel_applies_of_one_bundle_apply_it_exactly_once():
    import asyncio

    import httpx

    from tests.faults import database_url_named, server

    owner = make_owner()
    devices = [make_active_device(owner, f"device-{n}", lease_days=1) for n in range(3)]
    client = APIClient()
    session = open_wallet_session(client, owner.account)
    bundle = created(admin_api(owner.organization, Role.PLATFORM_ADMIN), owner)
    body = {
        "wallet": owner.wallet,
        "org_root_id": owner.organization.org_root_id,
        "principal_id": owner.principal.principal_id,
        "renewal_bundle": {"bundle_id": bundle["bundle_id"], "signed_payload": bundle["signed_payload"]},
    }
    headers = {"Authorization": f"Bearer {session}"}

    with server(database_url_named("renew-a")) as first, server(database_url_named("renew-b")) as second:

        async def scenario():
            clients = [httpx.AsyncClient(base_url=s.url, timeout=60) for s in (first, second)]
            try:
                posts = [clients[n % 2].post(APPLY_URL, json=body, headers=headers) for n in range(16)]
                return await asyncio.gather(*posts)
            finally:
                for one in clients:
                    await one.aclose()

        answers = asyncio.run(scenario())

    statuses = sorted(answer.status_code for answer in answers)
    assert statuses == [200] + [409] * 15, [answer.content for answer in answers]
    assert {answer.json()["code"] for answer in answers if answer.status_code == 409} == {"renewal_bundle_used"}
    assert AuditEvent.objects.filter(event_type="offline_renewal_applied").count() == len(devices)
    for device in devices:
        device.refresh_from_db()
        assert device.lease_expires_at == datetime.fromisoformat(bundle["renewed_until"])


# --- the console page: organization-scoped, created only through the service -----------------------


def console(organization, username: str, *roles):
    from django.test import Client

    client = Client()
    client.force_login(create_person(organization, username, roles=roles))
    return client


def test_console_viewers_list_bundles_but_only_admins_and_operators_add_them(admin, owner):
    bundle = created(admin, owner)
    viewer = console(owner.organization, "viewer", Role.PLATFORM_VIEWER)
    listing = viewer.get("/admin/governance/renewalbundle/")
    assert listing.status_code == 200 and bundle["bundle_id"] in listing.content.decode()
    assert viewer.get("/admin/governance/renewalbundle/add/").status_code == 403
    operator = console(owner.organization, "operator", Role.PLATFORM_OPERATOR)
    assert operator.get("/admin/governance/renewalbundle/add/").status_code == 200


def test_console_shows_no_bundle_of_another_organization(admin, owner):
    bundle = created(admin, owner)
    other = make_owner("org.other.root", "human.other")
    outsider = console(other.organization, "outsider", Role.PLATFORM_ADMIN)
    assert bundle["bundle_id"] not in outsider.get("/admin/governance/renewalbundle/").content.decode()
    pk = RenewalBundle.objects.get().pk
    assert outsider.get(f"/admin/governance/renewalbundle/{pk}/change/").status_code == 302  # "does not exist"
    add_page = outsider.get("/admin/governance/renewalbundle/add/").content.decode()
    assert other.wallet in add_page and owner.wallet not in add_page


def test_console_refuses_a_wallet_of_another_principal_with_the_services_reason(owner):
    colleague = make_owner(principal_id="human.colleague", organization=owner.organization)
    operator = console(owner.organization, "operator", Role.PLATFORM_OPERATOR)
    answer = operator.post(
        "/admin/governance/renewalbundle/add/",
        {
            "principal": owner.principal.pk,
            "wallet": colleague.wallet,
            "renewed_until": (timezone.now() + timedelta(days=30)).strftime("%Y-%m-%dT%H:%M"),
        },
    )
    assert answer.status_code == 200
    assert "not an ownership wallet of the principal" in answer.content.decode()
    assert not RenewalBundle.objects.exists()
