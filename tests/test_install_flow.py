"""The whole launcher flow over HTTP against a real server on PostgreSQL: nonce → sign with a
test wallet → install token → verify the package offline → confirm → status → heartbeat →
lease expires → parked → offline renewal → active again. Signatures (package, renewal
bundle) are checked with nothing but the published keys."""

import base64
import json
from datetime import timedelta

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from django.utils import timezone

from evidence.choices import KeyAlgorithm
from evidence.models import AuditEvent
from evidence.services import keys
from evidence.services.verification import verify_chain, verify_ledger
from governance.models import Device
from governance.services.device_leases import park_expired_devices
from governance.services.install_rules import device_chain_id
from governance.services.renewals import create_renewal_bundle
from governance.services.runtime_packages import register_package
from governance.siwe import format_message
from tests.faults import database_url_named, free_port, server
from tests.install_world import make_owner
from tests.siwe_wallets import sign as sign_text

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

DEVICE = "desktop-7f6f3a9b"
RECEIPT = "sha256:" + "8102d437" * 8


def verify_package(package: dict, platform: str, jwks: dict) -> bool:
    """docs/installs.md's offline check, as a launcher runs it: the descriptor's canonical
    bytes, the signer's key from the published set, Ed25519."""
    fields = {
        k: package[k]
        for k in ("package_hash", "package_url", "policy_hash", "rollout_channel", "runtime_version", "signer_key_id")
    }
    data = json.dumps({**fields, "platform": platform}, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    key = next(k for k in jwks["keys"] if k["kid"] == package["signer_key_id"])
    raw = base64.urlsafe_b64decode(key["x"] + "=" * (-len(key["x"]) % 4))
    Ed25519PublicKey.from_public_bytes(raw).verify(bytes.fromhex(package["signature"][8:]), data.encode())
    return True


def verify_bundle(signed_payload: str, jwks: dict) -> dict:
    """docs/renewals.md's offline check: the payload's canonical bytes under the named key."""
    document = json.loads(base64.b64decode(signed_payload.removeprefix("base64:")))
    payload = document["payload"]
    key = next(k for k in jwks["keys"] if k["kid"] == payload["kid"])
    raw = base64.urlsafe_b64decode(key["x"] + "=" * (-len(key["x"]) % 4))
    data = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    Ed25519PublicKey.from_public_bytes(raw).verify(bytes.fromhex(document["signature"].removeprefix("ed25519:")), data)
    return payload


def test_the_launcher_installs_keeps_alive_parks_and_renews_offline(settings):
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    settings.PUBLIC_BASE_URL = base
    owner = make_owner()
    package = register_package(
        platform="macos",
        rollout_channel="stable",
        runtime_version="1.0.0",
        package_url="https://downloads.example/runtime/1.0.0/macos-arm64.pkg",
        package_hash="sha256:" + "09f6d64f" * 8,
        policy_hash="sha256:" + "f10419ac" * 8,
    )
    keys.rotate_key(KeyAlgorithm.ED25519)  # the package's key is retired, still published

    with server(database_url_named("install-flow"), port, PUBLIC_BASE_URL=base) as running:
        http = httpx.Client(base_url=running.url, timeout=30)
        # 1. Sign in with the wallet
        nonce = http.get("/governance/auth/nonce").json()["nonce"]
        message = format_message(
            domain=f"127.0.0.1:{port}",
            address=owner.wallet,
            statement="Install the governed runtime.",
            uri=f"{base}/launcher",
            chain_id=1,
            nonce=nonce,
            issued_at=timezone.now(),
        )
        signed_in = http.post(
            "/governance/auth/verify", json={"message": message, "signature": sign_text(owner.account, message)}
        )
        assert signed_in.status_code == 200, signed_in.text
        http.headers["Authorization"] = f"Bearer {signed_in.json()['wallet_session']}"

        # 2. An install token, and the package verified offline with the published keys only
        issued = http.post(
            "/governance/install/token",
            json={
                "wallet": owner.wallet,
                "org_root_id": "org.acme.root",
                "principal_id": "human.joshua",
                "principal_role": "org_root_owner",
                "device_id": DEVICE,
                "launcher_version": "0.2.0",
                "platform": "macos",
                "current_runtime_version": "0.0.0",
            },
        )
        assert issued.status_code == 200, issued.text
        offer = issued.json()
        jwks = httpx.get(f"{running.url}/governance/signer-keys").json()
        assert offer["package"]["signer_key_id"] == package.signer_key_id
        assert verify_package(offer["package"], "macos", jwks)
        tampered = {**offer["package"], "package_url": "https://evil.example/runtime.pkg"}
        with pytest.raises(Exception):  # noqa: B017 (cryptography's InvalidSignature)
            verify_package(tampered, "macos", jwks)

        # 3. Confirm
        confirmed = http.post(
            "/governance/install/confirm",
            json={
                "install_token": offer["install_token"],
                "wallet": owner.wallet,
                "device_id": DEVICE,
                "entitlement_id": offer["entitlement_id"],
                "package_hash": offer["package"]["package_hash"],
                "runtime_version": offer["package"]["runtime_version"],
                "installed_at": timezone.now().isoformat().replace("+00:00", "Z"),
                "launcher_receipt_hash": RECEIPT,
            },
        )
        assert confirmed.status_code == 200, confirmed.text
        assert confirmed.json()["status"] == "governance_active"

        # 4. Status
        status = http.get("/governance/install/status", params={"wallet": owner.wallet, "device_id": DEVICE})
        assert status.status_code == 200, status.text
        assert status.json()["activation_status"] == "active"
        assert status.json()["availability_state"] == "active"

        # 5. Heartbeat
        where = {"wallet": owner.wallet, "org_root_id": "org.acme.root", "principal_id": "human.joshua"}
        beat = http.post("/governance/lease/heartbeat", json={**where, "device_id": DEVICE})
        assert beat.status_code == 200, beat.text
        assert beat.json()["status"] == "lease_refreshed" and beat.json()["availability_state"] == "active"
        assert beat.headers["X-Correlation-ID"].startswith("req_")

        # 6. The lease expires; the park task parks the device
        Device.objects.filter(device_id=DEVICE).update(lease_expires_at=timezone.now() - timedelta(seconds=1))
        assert park_expired_devices() == 1
        status = http.get("/governance/install/status", params={"wallet": owner.wallet, "device_id": DEVICE})
        assert status.json()["availability_state"] == "parked"

        # 7. Offline: an org admin's renewal bundle, verified offline, then applied
        renewed_until = timezone.now() + timedelta(days=365)
        bundle = create_renewal_bundle(
            owner.principal, owner.wallet, renewed_until=renewed_until, created_by="org-admin"
        )
        payload = verify_bundle(bundle.signed_payload, httpx.get(f"{running.url}/governance/signer-keys").json())
        assert payload["bundle_id"] == bundle.bundle_id and payload["wallet"] == owner.wallet
        renewal = {**where, "renewal_bundle": {"bundle_id": bundle.bundle_id, "signed_payload": bundle.signed_payload}}
        applied = http.post("/governance/lease/offline-renew", json=renewal)
        assert applied.status_code == 200, applied.text
        assert applied.json()["status"] == "renewal_applied" and applied.json()["availability_state"] == "active"
        assert http.post("/governance/lease/offline-renew", json=renewal).status_code == 409

        status = http.get("/governance/install/status", params={"wallet": owner.wallet, "device_id": DEVICE}).json()
        assert (status["availability_state"], status["access_class"]) == ("active", "offline")

    device = Device.objects.get(device_id=DEVICE)
    assert device.lease_expires_at >= renewed_until - timedelta(seconds=1)
    chain = device_chain_id(device)
    kinds = list(AuditEvent.objects.filter(chain_id=chain).order_by("sequence_no").values_list("event_type", flat=True))
    assert kinds[:2] == ["install.token_issued", "install.confirmed"] and len(kinds) >= 4
    assert verify_chain(chain).valid and verify_ledger().valid
