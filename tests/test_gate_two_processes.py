"""The gate's operator controls across two server processes of one deployment: the same
PostgreSQL database, the same Redis, the same ``MANDATE_ACTIONS_DIR``, production settings
(``governance.settings``: the gate state and the catalogue are re-read at most every second),
each process with ``PUBLIC_BASE_URL`` its own URL (DPoP ``htu`` and the lease's ``iss`` are
bound to it, so each agent talks to the process that issued its lease).

- drain through A: B refuses execute and lease issuance with 503 ``draining`` within ~1 s;
- revoke-all through A: a lease B issued before is ``invalid_lease`` on B; a new one works;
- reload through A after the manifests changed: B serves the new catalogue within ~1 s; a
  reload with a bad manifest leaves both on the previous one;
- execute on the hot path answers a receipt that an outside verifier checks with nothing but
  ``GET /v1/receipt-keys`` (Ed25519 over the ``result_hash`` string, and the hash over the
  receipt's fields), for receipts made before and after the receipt key is rotated.
"""

import base64
import hashlib
import json
import time
import uuid
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest
import rfc8785
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from django.test import override_settings

from controlplane.gate import acl, audit
from controlplane.gate.registry import reload
from evidence.choices import KeyAlgorithm
from evidence.models import AuditEvent
from evidence.services.keys import rotate_key
from governance.choices import Role
from tests import gate_client
from tests.faults import database_url_named, free_port, server
from tests.gate_actions import read_manifest, write_manifest
from tests.gate_world import AGENT, Target, local_actions, target  # noqa: F401  (fixture)

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

# A change made through one process is seen by the others within a second (the gate state's
# cache, MANDATE_GATE_CONFIG_RECHECK_SECONDS); the bound leaves room for a loaded machine.
SEEN_WITHIN = 2.0
POLL_FOR = 6.0  # how long a test keeps asking before it fails

# The receipt fields result_hash covers (docs/gate.md, "Receipts"): what an outside verifier
# recomputes, written here rather than imported, as such a verifier would.
HASHED_FIELDS = (
    "receipt_id",
    "grant_id",
    "trace_id",
    "action_id",
    "session_id",
    "provider_module_digest",
    "provider_receipt",
    "normalized_result",
    "verification_outcome",
    "effect_evidence",
    "started_at",
    "finished_at",
    "failure_class",
)


class Process:
    """One server process and the calls the tests make of it."""

    def __init__(self, running, token: str):
        self.url = running.url
        self.operator = {"Authorization": f"Bearer {token}"}
        self.http = httpx.Client(base_url=running.url, timeout=30)

    def lease(self, key=None) -> gate_client.Lease:
        key = key or gate_client.make_key()
        response = self.http.post("/v1/leases", json=gate_client.lease_body(key, agent_id=AGENT), headers=self.operator)
        assert response.status_code == 200, response.text
        body = response.json()
        return gate_client.Lease(body["lease_jwt"], body["session_id"], body["lease_jti"], body["expires_at"], key)

    def try_lease(self) -> httpx.Response:
        key = gate_client.make_key()
        return self.http.post("/v1/leases", json=gate_client.lease_body(key, agent_id=AGENT), headers=self.operator)

    def execute(self, lease: gate_client.Lease, action_id: str, body: dict) -> httpx.Response:
        """A plain request, as an SDK sends it: the hot path answers it (no query string, a
        JSON content type), with a fresh proof bound to this process's URL."""
        path = f"/v1/actions/{action_id}/execute"
        headers = {**lease.http_headers("POST", self.url + path), "Content-Type": "application/json"}
        return self.http.post(path, content=json.dumps(body).encode(), headers=headers)

    def receipt(self, lease: gate_client.Lease, receipt_id: str) -> httpx.Response:
        path = f"/v1/receipts/{receipt_id}"
        return self.http.get(path, headers=lease.http_headers("GET", self.url + path))

    def admin(self, method: str, path: str) -> httpx.Response:
        return self.http.request(method, path, headers=self.operator)

    def action_ids(self) -> set[str]:
        response = self.http.get("/v1/actions")
        assert response.status_code == 200, response.text
        return {action["action_id"] for action in response.json()["actions"]}


def until(ask, done, what: str):
    """Ask until ``done(answer)``; the answer and how long it took (fails after POLL_FOR)."""
    started = time.monotonic()
    while True:
        answer = ask()
        elapsed = time.monotonic() - started
        if done(answer):
            return answer, elapsed
        if elapsed > POLL_FOR:
            pytest.fail(f"{what}: not seen within {POLL_FOR} s (last answer: {answer!r})")
        time.sleep(0.05)


def answered(response: httpx.Response) -> tuple[int, object]:
    return response.status_code, response.json()


@pytest.fixture
def deployment(tmp_path, make_token, target):  # noqa: F811
    """Processes A and B on the test database, the shipped catalogue plus ``local_fetch`` and
    ``local_delete`` (their target: ``target``) loaded, the agent granted them."""
    actions = local_actions(tmp_path)
    with override_settings(MANDATE_ACTIONS_DIR=actions):
        reload()
        acl.grant(AGENT, ["local_fetch", "local_delete", "http_fetch"], actor=audit.SYSTEM)
    token = make_token(Role.PLATFORM_OPERATOR)
    with ExitStack() as stack:
        processes = []
        for name in ("a", "b"):
            port = free_port()
            running = stack.enter_context(
                server(
                    database_url_named(f"mandate-2p-{name}-{uuid.uuid4().hex[:8]}"),
                    port,
                    DJANGO_SETTINGS_MODULE="governance.settings",
                    PUBLIC_BASE_URL=f"http://127.0.0.1:{port}",
                    MANDATE_ACTIONS_DIR=str(actions),
                    MANDATE_EGRESS_ALLOW_PRIVATE="true",
                    MANDATE_GATE_FS_ROOT=str(tmp_path / "fs"),
                )
            )
            processes.append(Process(running, token))
            stack.callback(processes[-1].http.close)

        class Deployment:
            a, b = processes
            directory = Path(actions)
            url = target

        yield Deployment


def test_a_drain_through_one_process_stops_the_other_within_a_second(deployment):
    a, b = deployment.a, deployment.b
    lease_a, lease_b = a.lease(), b.lease()
    assert b.execute(lease_b, "local_fetch", {"url": f"{deployment.url}/before"}).status_code == 200

    drained = a.admin("POST", "/v1/admin/drain")
    assert drained.status_code == 200, drained.text
    assert drained.json()["draining"] is True and drained.json()["already_draining"] is False
    # The process that drained refuses at once, both new calls and new leases.
    assert answered(a.execute(lease_a, "local_fetch", {"url": f"{deployment.url}/a"})) == (503, {"error": "draining"})
    assert answered(a.try_lease()) == (503, {"error": "draining"})

    # The other one within a second: its calls go through until it reads the shared state.
    seen, elapsed = until(
        lambda: b.execute(lease_b, "local_fetch", {"url": f"{deployment.url}/b"}),
        lambda response: response.status_code != 200,
        "B refusing execute after A drained",
    )
    assert answered(seen) == (503, {"error": "draining"})
    assert elapsed < SEEN_WITHIN, elapsed
    refused, _ = until(b.try_lease, lambda response: response.status_code != 200, "B refusing leases")
    assert answered(refused) == (503, {"error": "draining"})
    status = b.admin("GET", "/v1/admin/status").json()
    assert status["draining"] is True and status["status"] == "draining"
    # Draining again through B is idempotent; one ledger event for the one drain.
    again = b.admin("POST", "/v1/admin/drain").json()
    assert again["draining"] is True and again["already_draining"] is True
    assert AuditEvent.objects.filter(event_type="GATE_ADMIN_DRAIN").count() == 1
    assert not any(path in ("/a",) for _, path, _ in Target.seen)  # A's refused call never ran


def test_revoke_all_through_one_process_voids_the_other_process_leases(deployment):
    a, b = deployment.a, deployment.b
    old = b.lease()
    assert b.execute(old, "local_fetch", {"url": f"{deployment.url}/cached"}).status_code == 200  # B caches it

    revoked = a.admin("POST", "/v1/admin/revoke-all")
    assert revoked.status_code == 200, revoked.text
    epochs = revoked.json()
    assert epochs["current_epoch"] == epochs["previous_epoch"] + 1

    refused, elapsed = until(
        lambda: b.execute(old, "local_fetch", {"url": f"{deployment.url}/after"}),
        lambda response: response.status_code != 200,
        "B refusing its own lease after A revoked all",
    )
    assert (refused.status_code, refused.json()["error"]) == (401, "invalid_lease")
    assert elapsed < SEEN_WITHIN, elapsed
    assert b.admin("GET", "/v1/admin/epoch").json() == {"current_epoch": epochs["current_epoch"]}

    fresh = b.lease()
    response = b.execute(fresh, "local_fetch", {"url": f"{deployment.url}/fresh"})
    assert response.status_code == 200, response.text
    assert a.execute(a.lease(), "local_fetch", {"url": f"{deployment.url}/fresh-a"}).status_code == 200
    assert answered(b.execute(old, "local_fetch", {"url": f"{deployment.url}/again"}))[0] == 401
    assert AuditEvent.objects.filter(event_type="GATE_ADMIN_REVOKE_ALL").count() == 1


def test_a_reload_through_one_process_changes_the_other_catalogue_and_a_bad_one_changes_none(deployment):
    a, b = deployment.a, deployment.b
    reloads = AuditEvent.objects.filter(event_type__in=["GATE_RELOADED", "GATE_RELOAD_FAILED"])
    earlier = {e.pk for e in reloads}  # the fixture's own load
    before = b.action_ids()
    assert {"local_fetch", "local_delete", "http_fetch"} <= before and "local_extra" not in before

    extra = read_manifest("http_fetch.yaml")
    extra.update(action_id="local_extra", description="GET a local URL, added later")
    extra["egress"] = {"profile": "proxy_allowlist", "allowed_domains": ["127.0.0.1"]}
    write_manifest(deployment.directory, "local_extra.yaml", extra)
    reloaded = a.admin("POST", "/v1/admin/reload")
    assert reloaded.status_code == 200, reloaded.text
    assert reloaded.json()["manifests_loaded"] == len(before) + 1
    assert a.action_ids() == before | {"local_extra"}  # at once where it was reloaded

    after, elapsed = until(b.action_ids, lambda ids: "local_extra" in ids, "B serving the reloaded catalogue")
    assert after == before | {"local_extra"}
    assert elapsed < SEEN_WITHIN, elapsed
    detail = b.http.get("/v1/actions/local_extra")
    assert detail.status_code == 200 and detail.json()["description"] == "GET a local URL, added later"

    # A bad manifest, with another change beside it: the reload fails whole, nothing moves.
    write_manifest(deployment.directory, "broken.yaml", {**extra, "action_id": "broken", "risk_level": "extreme"})
    (deployment.directory / "local_extra.yaml").unlink()
    failed = a.admin("POST", "/v1/admin/reload")
    assert answered(failed) == (500, {"error": "reload_failed"})
    deadline = time.monotonic() + SEEN_WITHIN  # past every process's next re-check
    while time.monotonic() < deadline:
        assert a.action_ids() == after and b.action_ids() == after
        time.sleep(0.2)
    lease = b.lease()
    assert b.execute(lease, "local_fetch", {"url": f"{deployment.url}/still"}).status_code == 200
    events = [e for e in reloads.order_by("ledger_seq") if e.pk not in earlier]
    assert [e.event_type for e in events] == ["GATE_RELOADED", "GATE_RELOAD_FAILED"]


# --- receipts checked from outside ------------------------------------------------------------


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def outside_verdict(receipt: dict, jwks: dict) -> str:
    """What a verifier holding only the published key set concludes: the receipt's fields hash
    to its ``result_hash``, and the Ed25519 signature (hex) over that string verifies with the
    key its ``signing_key_id`` names."""
    core = {name: receipt[name] for name in HASHED_FIELDS}
    if receipt["result_hash"] != "sha256:" + hashlib.sha256(rfc8785.dumps(core)).hexdigest():
        return "content_changed"
    keys = {k["kid"]: k for k in jwks["keys"] if k.get("kty") == "OKP" and k.get("crv") == "Ed25519"}
    jwk = keys.get(receipt["signing_key_id"])
    if jwk is None:
        return "unknown_kid"
    raw = b64url_decode(jwk["x"])
    assert bytes.fromhex(jwk["x_hex"]) == raw  # LatchGate's clients read x_hex
    try:
        public = Ed25519PublicKey.from_public_bytes(raw)
        public.verify(bytes.fromhex(receipt["receipt_signature"]), receipt["result_hash"].encode("ascii"))
    except InvalidSignature:
        return "signature_invalid"
    return "verified"


def executed(process: Process, lease, url: str) -> dict:
    response = process.execute(lease, "local_fetch", {"url": url})
    assert response.status_code == 200, response.text
    # The hot path answered (Django's view would add DRF's Allow header).
    assert "allow" not in response.headers and response.headers["content-type"] == "application/json"
    body = response.json()
    assert body["verification"] == {"outcome": "verified", "is_fully_successful": True}
    return body


def test_receipts_verify_with_only_the_published_keys_before_and_after_a_key_rotation(deployment):
    a, b = deployment.a, deployment.b
    lease_a, lease_b = a.lease(), b.lease()
    first = executed(a, lease_a, f"{deployment.url}/first")

    # Read back through the other process, with the agent's lease, as the SDK reads it.
    stored = b.receipt(lease_b, first["receipt_id"])
    assert stored.status_code == 200, stored.text
    old_receipt = stored.json()
    assert old_receipt["signature_status"] == "verified"
    assert (old_receipt["trace_id"], old_receipt["grant_id"]) == (first["trace_id"], first["grant_id"])
    keys = b.http.get("/v1/receipt-keys")  # no credential: public keys for outside verifiers
    assert keys.status_code == 200 and "public" in keys.headers["cache-control"]
    assert outside_verdict(old_receipt, keys.json()) == "verified"
    old_kid = old_receipt["signing_key_id"]

    new_kid = rotate_key(KeyAlgorithm.ED25519).kid
    assert new_kid != old_kid
    after_a = executed(a, lease_a, f"{deployment.url}/after-a")
    after_b = executed(b, lease_b, f"{deployment.url}/after-b")

    jwks = a.http.get("/v1/receipt-keys").json()
    assert {old_kid, new_kid} <= {k["kid"] for k in jwks["keys"]}
    for process, lease, body in ((a, lease_a, after_a), (b, lease_b, after_b)):
        receipt = process.receipt(lease, body["receipt_id"]).json()
        assert receipt["signing_key_id"] == new_kid  # both processes sign with the new key at once
        assert receipt["signature_status"] == "verified"
        assert outside_verdict(receipt, jwks) == "verified"
    again = a.receipt(lease_a, first["receipt_id"]).json()
    assert again["signature_status"] == "verified" and outside_verdict(again, jwks) == "verified"

    # The verifier is not a rubber stamp: an edited field, a wrong key, a missing key.
    assert outside_verdict({**again, "provider_receipt": {"status": 500}}, jwks) == "content_changed"
    wrong = {"keys": [{**k, "kid": old_kid} for k in jwks["keys"] if k["kid"] == new_kid]}
    assert outside_verdict(again, wrong) == "signature_invalid"
    only_new = {"keys": [k for k in jwks["keys"] if k["kid"] == new_kid]}
    assert outside_verdict(again, only_new) == "unknown_kid"
