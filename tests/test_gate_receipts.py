"""The action gate's receipts: hashed and signed as docs/gate.md says, verifiable from the
published keys alone (across rotations), append-only in the database, and their tampering
visible to ``GET /v1/receipts/{id}`` and ``GET /v1/audit/verify``."""

import hashlib
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
import rfc8785
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from django.core.management import CommandError, call_command
from django.db import DatabaseError, connection, transaction

from evidence.canonical import canonical_json, map_leaves
from evidence.choices import KeyAlgorithm, SignatureStatus
from evidence.models import Receipt, SigningKey
from evidence.services import keys, receipts
from evidence.services.chain import append_events, json_native
from evidence.services.gate_events import gate_event
from evidence.services.keys import b64url_decode
from evidence.services.receipts import (
    HASHED_FIELDS,
    InvalidReceipt,
    find_receipt,
    issue_receipt,
    receipt_document,
    result_hash_of,
    verify_receipt,
    verify_receipts,
)
from governance.choices import Role
from tests.database_roles import as_owner_unguarded

pytestmark = pytest.mark.django_db

STARTED = datetime(2026, 4, 18, 9, 12, 4, 113000, tzinfo=UTC)
REFERENCE_FIELDS = {
    "receipt_id",
    "grant_id",
    "provider_module_digest",
    "provider_receipt",
    "normalized_result",
    "verification_outcome",
    "effect_evidence",
    "result_hash",
    "receipt_signature",
    "signing_key_id",
    "started_at",
    "finished_at",
    "failure_class",
    "signature_status",
}


def issue(**overrides) -> Receipt:
    fields = {
        "grant_id": "grant_0190a1b2c3d4e5f60718293a4b5c6d7e",
        "provider_module_digest": "sha256:" + "a1" * 32,
        "provider_receipt": {"status": 200, "body": "hello", "headers": {"b": "2", "a": "1"}},
        "normalized_result": {"kind": "success", "summary": "HTTP 200 OK"},
        "verification_outcome": {"status": "verified", "evidence": {"status_code": 200}},
        "effect_evidence": [{"message_id": "msg-001", "rows": 1}],
        "started_at": STARTED,
        "finished_at": STARTED + timedelta(milliseconds=142),
        "failure_class": None,
        "trace_id": "trc_0190a1b2c3d4e5f60718293a4b5c6d7e",
        "action_id": "http_fetch",
        "session_id": "ses_0190a1b2c3d4e5f60718293a4b5c6d7e",
    }
    return issue_receipt(**{**fields, **overrides})


def _reordered(value):
    """The same JSON with every object's keys in reverse order."""
    if isinstance(value, dict):
        return {key: _reordered(value[key]) for key in reversed(list(value))}
    if isinstance(value, list):
        return [_reordered(item) for item in value]
    return value


def _published(client) -> dict:
    response = client.get("/v1/receipt-keys")
    assert response.status_code == 200
    return response.json()


def _tamper(sql, params):
    """Change a receipt behind the service's back, as someone with the owner's access would."""
    with as_owner_unguarded("evidence_receipt"), connection.cursor() as cursor:
        cursor.execute(sql, params)


# -- the hash and the signature ------------------------------------------------------------


def test_result_hash_is_sha256_of_the_rfc8785_form_of_the_hashed_fields():
    receipt = issue()
    document = receipt_document(find_receipt(receipt.receipt_id))
    core = {name: document[name] for name in HASHED_FIELDS}
    assert receipt.result_hash == "sha256:" + hashlib.sha256(rfc8785.dumps(core)).hexdigest()
    assert document["started_at"] == "2026-04-18T09:12:04.113000Z"
    assert document["result_hash"] == receipt.result_hash


class _RollBack(Exception):
    pass


def test_result_hash_does_not_depend_on_key_order():
    receipt_id = "rcpt_0190a1b2c3d4e5f60718293a4b5c6d7e"
    with pytest.raises(_RollBack), transaction.atomic():
        first = issue(receipt_id=receipt_id)
        assert result_hash_of(_reordered(receipt_document(first))) == first.result_hash
        raise _RollBack

    # The same receipt issued again with every object's keys in another order: the same hash.
    again = issue(
        receipt_id=receipt_id,
        provider_receipt={"headers": {"a": "1", "b": "2"}, "body": "hello", "status": 200},
        normalized_result={"summary": "HTTP 200 OK", "kind": "success"},
        verification_outcome={"evidence": {"status_code": 200}, "status": "verified"},
        effect_evidence=[{"rows": 1, "message_id": "msg-001"}],
    )
    assert again.result_hash == first.result_hash
    assert issue(provider_receipt={"status": 201}).result_hash != first.result_hash


def test_every_hashed_field_changes_the_hash():
    document = receipt_document(issue())
    changed = {
        "receipt_id": "rcpt_other",
        "grant_id": "grant_other",
        "trace_id": "trc_other",
        "action_id": "fs_read",
        "session_id": None,
        "provider_module_digest": "builtin:fs",
        "provider_receipt": {"status": 500},
        "normalized_result": {"kind": "timeout"},
        "verification_outcome": {"status": "skipped"},
        "effect_evidence": [],
        "started_at": "2026-04-18T09:12:04.113001Z",
        "finished_at": "2026-04-18T09:12:05.000000Z",
        "failure_class": "timeout",
    }
    assert set(changed) == set(HASHED_FIELDS)
    for name, value in changed.items():
        assert result_hash_of({**document, name: value}) != document["result_hash"], name


def test_signature_is_ed25519_over_the_ascii_of_result_hash_as_the_receipt_carries_it(client):
    # LatchGate's server signs its result_hash field verbatim (receipt_ext.rs: sign(&self.result_hash));
    # Mandate's field carries the reference's "sha256:" prefix, so the prefix is signed too.
    receipt = issue()
    key = next(k for k in _published(client)["keys"] if k["kid"] == receipt.signing_key_id)
    public = Ed25519PublicKey.from_public_bytes(b64url_decode(key["x"]))
    signature = bytes.fromhex(receipt.receipt_signature)
    public.verify(signature, receipt.result_hash.encode("ascii"))
    with pytest.raises(InvalidSignature):
        public.verify(signature, receipt.result_hash.removeprefix("sha256:").encode("ascii"))


def test_receipts_verify_with_only_the_published_keys_across_a_rotation(client):
    old = issue()
    call_command("rotate_signing_key", algorithm="EdDSA")
    new = issue()
    assert new.signing_key_id != old.signing_key_id
    published = _published(client)
    assert {old.signing_key_id, new.signing_key_id} <= {key["kid"] for key in published["keys"]}
    for receipt in (old, new):
        document = receipt_document(receipt)
        assert verify_receipt(document, published) == SignatureStatus.VERIFIED
        # LatchGate's JWKS form (x_hex only) verifies too.
        hex_only = {"keys": [{k: v for k, v in key.items() if k != "x"} for key in published["keys"]]}
        assert verify_receipt(document, hex_only) == SignatureStatus.VERIFIED
    # Without the retired key published, the old receipt's kid is unknown; the new one still verifies.
    current_only = {"keys": [key for key in published["keys"] if key["kid"] == new.signing_key_id]}
    assert verify_receipt(receipt_document(old), current_only) == SignatureStatus.UNKNOWN_KID
    assert verify_receipt(receipt_document(new), current_only) == SignatureStatus.VERIFIED


def test_a_key_retired_by_another_process_is_not_used_for_new_receipts():
    first = issue()
    stale = keys.active_signer(KeyAlgorithm.ED25519)
    keys.rotate_key(KeyAlgorithm.ED25519)
    keys._active_signers[KeyAlgorithm.ED25519] = stale  # what another process still holds
    receipt = issue()
    active = SigningKey.objects.get(algorithm=KeyAlgorithm.ED25519, status="active")
    assert receipt.signing_key_id == active.kid != first.signing_key_id
    assert verify_receipt(find_receipt(receipt.receipt_id)) == SignatureStatus.VERIFIED


def test_a_key_whose_creation_rolled_back_is_not_used():
    keys.forget_active_signers()
    with pytest.raises(RuntimeError), transaction.atomic():
        rolled_back, _ = keys.active_signer(KeyAlgorithm.ED25519)
        raise RuntimeError("the caller's transaction fails")
    receipt = issue()
    assert receipt.signing_key_id != rolled_back
    assert SigningKey.objects.filter(kid=receipt.signing_key_id).exists()
    assert verify_receipt(find_receipt(receipt.receipt_id)) == SignatureStatus.VERIFIED


def test_issuing_a_receipt_with_the_key_cached_is_one_statement(django_assert_num_queries):
    issue()
    with django_assert_num_queries(1):
        issue()


def test_issue_receipt_runs_in_the_callers_transaction():
    with pytest.raises(RuntimeError), transaction.atomic():
        receipt = issue()
        append_events(
            receipt.trace_id,
            [
                gate_event(
                    "GATE_ACTION_CALL",
                    trace_id=receipt.trace_id,
                    action_id="http_fetch",
                    principal="agent-1",
                    session_id=None,
                    decision="allow",
                    receipt_id=receipt.receipt_id,
                )
            ],
        )
        raise RuntimeError("the pipeline fails after the receipt")
    assert not Receipt.objects.exists()


# -- statuses ---------------------------------------------------------------------------------


def test_unknown_kid():
    document = receipt_document(issue())
    assert verify_receipt(document, {"keys": []}) == SignatureStatus.UNKNOWN_KID
    assert verify_receipt({**document, "signing_key_id": "ed25519-19700101-00000000"}) == SignatureStatus.UNKNOWN_KID
    assert verify_receipt({**document, "signing_key_id": ""}) == SignatureStatus.UNKNOWN_KID


def test_tampered_receipts_are_signature_invalid(client):
    receipt = issue()
    document = receipt_document(receipt)
    published = _published(client)
    tampered_content = {**document, "provider_receipt": {"status": 200, "body": "forged"}}
    rehashed = {**tampered_content, "result_hash": result_hash_of(tampered_content)}
    flipped = document["receipt_signature"][:-1] + ("0" if document["receipt_signature"][-1] != "0" else "1")
    for forged in (
        tampered_content,  # content no longer hashes to the signed result_hash
        rehashed,  # result_hash recomputed, but the signature covers the old one
        {**document, "receipt_signature": flipped},
        {**document, "receipt_signature": "not hex"},
        {**document, "receipt_signature": "ab" * 10},
        {**document, "result_hash": None},
        {k: v for k, v in document.items() if k != "trace_id"},
    ):
        assert verify_receipt(forged, published) == SignatureStatus.SIGNATURE_INVALID
        assert verify_receipt(forged) == SignatureStatus.SIGNATURE_INVALID
    assert verify_receipt(document, published) == verify_receipt(receipt) == SignatureStatus.VERIFIED


def test_unsigned():
    document = receipt_document(issue())
    assert verify_receipt({k: v for k, v in document.items() if k != "receipt_signature"}) == SignatureStatus.UNSIGNED
    assert verify_receipt({**document, "receipt_signature": ""}) == SignatureStatus.UNSIGNED


# -- what a receipt may hold ------------------------------------------------------------------


@pytest.mark.parametrize(
    "overrides",
    [
        {"normalized_result": {"kind": "finished"}},
        {"normalized_result": {"kind": "success"}},
        {"normalized_result": {"kind": "provider_failure", "summary": "x"}},
        {"normalized_result": {"kind": "timeout", "reason": "x"}},
        {"verification_outcome": {"status": "verification_failed"}},
        {"verification_outcome": {"status": "verified"}},
        {"verification_outcome": {"status": "maybe"}},
        {"failure_class": "oops"},
        {"effect_evidence": {"not": "a list"}},
        {"started_at": datetime(2026, 4, 18, 9, 12)},
        {"grant_id": ""},
        {"trace_id": "trc with spaces"},
        {"receipt_id": "-leading-dash"},
        {"provider_module_digest": None},
        {"provider_receipt": {"n": float("nan")}},
    ],
)
def test_what_a_receipt_cannot_hold_is_refused(overrides):
    with pytest.raises((InvalidReceipt, ValueError)):
        issue(**overrides)
    assert not Receipt.objects.exists()


def test_every_variant_of_the_tagged_values_is_accepted():
    for result, outcome, failure in (
        (
            {"kind": "provider_failure", "reason": "HTTP 503"},
            {"status": "provider_failed_before_verification"},
            "provider_error",
        ),
        ({"kind": "timeout"}, {"status": "skipped"}, "timeout"),
        ({"kind": "cancelled"}, {"status": "skipped"}, "cancelled"),
        ({"kind": "internal_error", "reason": "x"}, {"status": "skipped"}, "internal_error"),
        ({"kind": "success", "summary": "sent"}, {"status": "unverifiable_declared"}, None),
        (
            {"kind": "success", "summary": "ok"},
            {"status": "verification_failed", "reason": "404"},
            "verification_failed",
        ),
    ):
        receipt = issue(normalized_result=result, verification_outcome=outcome, failure_class=failure)
        stored = find_receipt(receipt.receipt_id)
        assert (stored.normalized_result, stored.verification_outcome, stored.failure_class) == (
            result,
            outcome,
            failure,
        )
        assert verify_receipt(stored) == SignatureStatus.VERIFIED


def test_provider_output_postgres_cannot_store_is_kept_as_replacement_characters():
    receipt = issue(provider_receipt={"body": "a\x00b\ud800c", "k\x00": [1, {"deep": "\x00"}], "n": 2**60})
    stored = find_receipt(receipt.receipt_id)
    assert stored.provider_receipt == {"body": "a\ufffdb\ufffdc", "k\ufffd": [1, {"deep": "\ufffd"}], "n": str(2**60)}
    assert verify_receipt(stored) == SignatureStatus.VERIFIED


@pytest.mark.parametrize(
    "output",
    [
        {"status": 200, "headers": {"content-type": "application/json"}, "body": {"ok": True, "items": [1, 2.5]}},
        {"é\x00": ["ü\ud800", None, False, -(2**53 - 1)], "k": {"deep": [[{"x": "\x00"}]]}},
        {"big": 2**60, "float": 1e300, "text": "plain"},
        {1: "a non-string key"},
        [Decimal("1.5"), datetime(2026, 1, 2, tzinfo=UTC), uuid.UUID(int=7)],
        "\udfff alone",
        [],
    ],
)
def test_provider_output_is_stored_as_the_general_json_path_would_store_it(output):
    """The one-pass copy of plain JSON output gives what the general path (``json_native``, then
    every string made storable) gives, whatever the output holds."""
    general = map_leaves(json_native(output), receipts._storable_leaf, key=receipts._storable_text)
    assert receipts.storable_json(output) == general
    assert canonical_json(receipts.storable_json(output)) == canonical_json(general)


def test_receipt_ids_are_rcpt_and_a_uuid7_in_hex():
    receipt = issue()
    prefix, _, tail = receipt.receipt_id.partition("_")
    assert prefix == "rcpt" and len(tail) == 32 and tail[12] == "7"
    assert issue(receipt_id="rcpt_chosen.by-caller").receipt_id == "rcpt_chosen.by-caller"


# -- the database -----------------------------------------------------------------------------


@pytest.mark.postgres
def test_postgres_refuses_update_delete_and_truncate_of_receipts():
    receipt = issue()
    for statement in (
        "UPDATE evidence_receipt SET grant_id = 'grant_x' WHERE receipt_id = %s",
        "DELETE FROM evidence_receipt WHERE receipt_id = %s",
    ):
        with (
            pytest.raises(DatabaseError, match="append-only|permission denied"),
            transaction.atomic(),
            connection.cursor() as cursor,
        ):
            cursor.execute(statement, [receipt.receipt_id])
    with pytest.raises(DatabaseError), transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("TRUNCATE evidence_receipt")
    with pytest.raises(DatabaseError), transaction.atomic():
        receipt.grant_id = "grant_x"
        receipt.save()
    with pytest.raises(DatabaseError), transaction.atomic():
        Receipt.objects.filter(pk=receipt.pk).delete()
    assert find_receipt(receipt.receipt_id).grant_id == "grant_0190a1b2c3d4e5f60718293a4b5c6d7e"


def test_a_receipt_altered_in_the_database_no_longer_verifies(client_with):
    receipt, other = issue(), issue()
    _tamper(
        "UPDATE evidence_receipt SET normalized_result = %s WHERE receipt_id = %s",
        ['{"kind": "success", "summary": "HTTP 200 OK (forged)"}', receipt.receipt_id],
    )
    operator = client_with(Role.PLATFORM_OPERATOR)
    body = operator.get(f"/v1/receipts/{receipt.receipt_id}").json()
    assert body["normalized_result"]["summary"] == "HTTP 200 OK (forged)"
    assert body["signature_status"] == "signature_invalid"
    assert operator.get(f"/v1/receipts/{other.receipt_id}").json()["signature_status"] == "verified"

    verdict = operator.get("/v1/audit/verify").json()
    assert verdict["intact"] is False and verdict["error_kind"] == "receipt_invalid"
    assert verdict["broken_receipt"] == {"receipt_id": receipt.receipt_id, "signature_status": "signature_invalid"}
    assert verdict["receipts_checked"] >= 1
    with pytest.raises(CommandError, match="does not verify: signature_invalid"):
        call_command("verify_ledger")


def test_a_receipt_signature_removed_in_the_database_reads_unsigned(client_with):
    receipt = issue()
    _tamper(
        "UPDATE evidence_receipt SET receipt_signature = '', signing_key_id = '' WHERE receipt_id = %s",
        [receipt.receipt_id],
    )
    body = client_with(Role.PLATFORM_OPERATOR).get(f"/v1/receipts/{receipt.receipt_id}").json()
    assert body["signature_status"] == "unsigned"
    assert "receipt_signature" not in body and "signing_key_id" not in body
    assert verify_receipts().status == "unsigned"


def test_a_receipt_a_ledger_event_names_but_that_is_gone_breaks_verification(client_with):
    receipt = issue()
    event = gate_event(
        "GATE_ACTION_CALL",
        trace_id=receipt.trace_id,
        action_id="http_fetch",
        principal="agent-1",
        session_id=receipt.session_id,
        decision="allow",
        receipt_id=receipt.receipt_id,
    )
    append_events(receipt.trace_id, [event])
    operator = client_with(Role.PLATFORM_OPERATOR)
    assert operator.get("/v1/audit/verify").json() == {
        "intact": True,
        "events_checked": 1,
        "broken_at": None,
        "receipts_checked": 1,
    }
    _tamper("DELETE FROM evidence_receipt WHERE receipt_id = %s", [receipt.receipt_id])
    verdict = operator.get("/v1/audit/verify").json()
    assert verdict["intact"] is False
    assert verdict["broken_receipt"] == {"receipt_id": receipt.receipt_id, "signature_status": "missing"}


# -- the API ----------------------------------------------------------------------------------


def test_get_receipt_is_the_reference_json_with_signature_status(client_with):
    receipt = issue()
    response = client_with(Role.PLATFORM_OPERATOR).get(f"/v1/receipts/{receipt.receipt_id}")
    assert response.status_code == 200
    body = response.json()
    assert set(body) >= REFERENCE_FIELDS
    assert set(body) - REFERENCE_FIELDS == {"trace_id", "action_id", "session_id"}
    assert body["signature_status"] == "verified"
    assert body["normalized_result"] == {"kind": "success", "summary": "HTTP 200 OK"}
    assert body["verification_outcome"] == {"status": "verified", "evidence": {"status_code": 200}}
    assert body["failure_class"] is None
    assert body["result_hash"].startswith("sha256:") and len(body["result_hash"]) == 71
    assert (body["started_at"], body["finished_at"]) == ("2026-04-18T09:12:04.113000Z", "2026-04-18T09:12:04.255000Z")
    assert client_with(Role.PLATFORM_ADMIN).get(f"/v1/receipts/{receipt.receipt_id}").status_code == 200


def test_get_receipt_needs_an_operator(client, client_with):
    receipt = issue()
    assert client.get(f"/v1/receipts/{receipt.receipt_id}").status_code == 401
    denied = client_with(Role.PLATFORM_VIEWER).get(f"/v1/receipts/{receipt.receipt_id}")
    assert denied.status_code == 403 and denied.json()["error"] == "forbidden"


@pytest.mark.parametrize("receipt_id", ["rcpt_0190a1b2c3d4e5f60718293a4b5c6d7e", "not a receipt", "x%00y", "-x"])
def test_unknown_receipt_is_404_not_found(client_with, receipt_id):
    response = client_with(Role.PLATFORM_OPERATOR).get(f"/v1/receipts/{receipt_id}")
    assert (response.status_code, response.json()) == (404, {"error": "not_found"})


def test_receipt_keys_are_every_ed25519_key_unauthenticated(client):
    keys.sign(KeyAlgorithm.ES256, b"a lease")  # not a receipt key
    first = issue().signing_key_id
    call_command("rotate_signing_key", algorithm="EdDSA")
    second = issue().signing_key_id
    response = client.get("/v1/receipt-keys", HTTP_AUTHORIZATION="DPoP whatever", HTTP_DPOP="ignored")
    assert response.status_code == 200
    published = response.json()["keys"]
    assert [key["kid"] for key in published] == [first, second]  # oldest first, as LatchGate appends
    for key in published:
        assert (key["kty"], key["crv"], key["alg"], key["use"]) == ("OKP", "Ed25519", "EdDSA", "sig")
        assert b64url_decode(key["x"]).hex() == key["x_hex"] and len(key["x_hex"]) == 64
        assert key["added_at"].endswith("Z")
        assert "d" not in key


def test_receipts_verify_offline_with_nothing_of_mandates(client, client_with):
    """What docs/gate.md tells an external verifier to do, with rfc8785 and cryptography only."""
    receipt_id = issue().receipt_id
    receipt = client_with(Role.PLATFORM_OPERATOR).get(f"/v1/receipts/{receipt_id}").json()
    jwks = client.get("/v1/receipt-keys").json()

    hashed = ["receipt_id", "grant_id", "trace_id", "action_id", "session_id", "provider_module_digest",
              "provider_receipt", "normalized_result", "verification_outcome", "effect_evidence",
              "started_at", "finished_at", "failure_class"]  # fmt: skip
    digest = hashlib.sha256(rfc8785.dumps({name: receipt[name] for name in hashed})).hexdigest()
    assert receipt["result_hash"] == "sha256:" + digest
    key = next(k for k in jwks["keys"] if k["kid"] == receipt["signing_key_id"])
    Ed25519PublicKey.from_public_bytes(bytes.fromhex(key["x_hex"])).verify(
        bytes.fromhex(receipt["receipt_signature"]), receipt["result_hash"].encode("ascii")
    )
