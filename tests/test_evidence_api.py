import base64
import copy
import dataclasses
import json
import uuid
from datetime import timedelta

import pytest
import rfc8785
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from django.core.management import CommandError, call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext

from envelopes.evaluation.engine import EvaluationRequest, evaluate
from envelopes.evaluation.reviews import review_envelope
from envelopes.models import Envelope
from envelopes.services.integrity import IntegrityRecord, assess_chain, envelope_events
from envelopes.services.packets import signed_content, verify_packet
from evidence.choices import KeyAlgorithm
from evidence.models import AuditEvent
from evidence.services.chain import append_event
from evidence.services.keys import rotate_key, sign
from governance.choices import Role
from governance.services.people import ensure_organization
from tests.factories import declare_demo_authority as load_demo
from tests.test_evidence_chain import _pk, _tamper

pytestmark = pytest.mark.django_db

ITEM_FIELDS = {
    "id",
    "envelope_id",
    "request_source",
    "request_id",
    "sequence_no",
    "event_type",
    "performer_type",
    "performer_id",
    "payload",
    "occurred_at",
    "hash",
    "prev_hash",
}


@pytest.fixture
def viewer(client_with):
    return client_with(Role.PLATFORM_VIEWER)


def decide(organization, request_id, source="payments", **overrides) -> Envelope:
    body = {
        "surface_id": "surf-payment-release",
        "agent_id": "agent-payments-prod",
        "confidence": 0.95,
        "consequence": {"type": "monetary", "amount": 500, "currency": "GBP"},
        "context": {"account_id": "acc-1", "destination_country": "GB"},
        "request_id": request_id,
        "request_source": source,
        **overrides,
    }
    fields = {k: v for k, v in body.items() if k in EvaluationRequest.__dataclass_fields__}
    response = evaluate(organization, EvaluationRequest(**fields), json.dumps(body), performer_id="t")
    return Envelope.objects.get(pk=response["envelope_id"])


def _events(envelope):
    return list(AuditEvent.objects.filter(chain_id=str(envelope.pk)).order_by("sequence_no"))


# --- GET /v1/evidence/envelopes/{id}/audit-events ----------------------------------------------


def test_envelope_audit_events_are_its_chain_in_sequence_order(viewer, demo):
    envelope = decide(demo, "req-1")
    response = viewer.get(f"/v1/evidence/envelopes/{envelope.pk}/audit-events")
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"envelope_id", "items", "count"}
    assert body["envelope_id"] == str(envelope.pk)
    assert body["count"] == len(body["items"]) == 11
    stored = _events(envelope)
    for item, event in zip(body["items"], stored, strict=True):
        assert set(item) == ITEM_FIELDS
        assert item["id"] == str(event.pk) and item["hash"] == event.hash and item["prev_hash"] == event.prev_hash
        assert (item["envelope_id"], item["request_source"], item["request_id"]) == (
            str(envelope.pk),
            "payments",
            "req-1",
        )
    assert [i["sequence_no"] for i in body["items"]] == list(range(1, 12))
    assert body["items"][0]["event_type"] == "ENVELOPE_CREATED"
    assert body["items"][-1]["event_type"] == "ENVELOPE_CLOSED"
    assert body["items"][0]["occurred_at"].endswith("Z") and len(body["items"][0]["occurred_at"]) == 27


@pytest.mark.parametrize("suffix", ["audit-events", "integrity", "packet"])
def test_an_envelope_id_that_is_not_a_uuid_is_400(viewer, demo, suffix):
    response = viewer.get(f"/v1/evidence/envelopes/not-a-uuid/{suffix}")
    assert response.status_code == 400
    assert response.json() == {"error": "invalid envelope id"}


@pytest.mark.parametrize("suffix", ["audit-events", "integrity", "packet"])
def test_an_unknown_envelope_is_404(viewer, demo, suffix):
    response = viewer.get(f"/v1/evidence/envelopes/{uuid.uuid4()}/{suffix}")
    assert response.status_code == 404
    assert response.json() == {"error": "envelope not found"}


@pytest.mark.parametrize("suffix", ["audit-events", "integrity", "packet"])
def test_another_organizations_envelope_is_404(viewer, demo, suffix):
    foreign = decide(ensure_organization("globex", "Globex"), "req-1")
    response = viewer.get(f"/v1/evidence/envelopes/{foreign.pk}/{suffix}")
    assert response.status_code == 404


def test_evidence_needs_platform_viewer_or_above(client_with, api_client, demo):
    envelope = decide(demo, "req-1")
    paths = [f"/v1/evidence/envelopes/{envelope.pk}/{s}" for s in ("audit-events", "integrity", "packet")]
    paths.append("/v1/evidence/audit-events")
    reviewer, operator = client_with(Role.GOVERNANCE_REVIEWER), client_with(Role.PLATFORM_OPERATOR)
    for path in paths:
        assert api_client.get(path).status_code == 401
        denied = reviewer.get(path)
        assert denied.status_code == 403
        assert denied.json() == {"error": "forbidden", "required_permission": "evidence:read"}
        assert operator.get(path).status_code == 200


# --- GET /v1/evidence/audit-events -------------------------------------------------------------


@pytest.fixture
def three(demo):
    accepted = decide(demo, "req-a", source="payments")
    escalated = decide(demo, "req-b", source="payments", confidence=0.5)
    rejected = decide(demo, "req-c", source="lending", agent_id="agent-nobody")
    return accepted, escalated, rejected


def search(client, **params):
    response = client.get("/v1/evidence/audit-events", params)
    assert response.status_code == 200, response.json()
    body = response.json()
    assert set(body) == {"items", "count", "next_cursor"} and body["count"] == len(body["items"])
    return body


def test_search_returns_only_the_organizations_envelope_events(viewer, three):
    foreign = decide(ensure_organization("globex", "Globex"), "req-x")
    append_event("not-an-envelope", "OTHER")  # a chain that is not an envelope's
    body = search(viewer, limit=500)
    envelope_ids = {item["envelope_id"] for item in body["items"]}
    assert envelope_ids == {str(e.pk) for e in three}
    assert str(foreign.pk) not in envelope_ids
    assert body["count"] == sum(len(_events(e)) for e in three) and body["next_cursor"] is None
    first = body["items"][0]
    assert set(first) == ITEM_FIELDS


def test_search_filters_combine(viewer, three):
    accepted, escalated, rejected = three
    pending = search(viewer, event_type="ESCALATION_PENDING")["items"]
    assert [(i["envelope_id"], i["request_id"]) for i in pending] == [(str(escalated.pk), "req-b")]
    closed_or_pending = search(viewer, event_types="ENVELOPE_CLOSED, ESCALATION_PENDING,")["items"]
    assert {i["event_type"] for i in closed_or_pending} == {"ENVELOPE_CLOSED", "ESCALATION_PENDING"}
    assert len(closed_or_pending) == 3
    both = search(viewer, event_type="ENVELOPE_CLOSED", event_types="ENVELOPE_CLOSED,ESCALATION_PENDING")
    assert both["count"] == 2
    one = search(viewer, envelope_id=str(rejected.pk))["items"]
    assert {i["envelope_id"] for i in one} == {str(rejected.pk)} and len(one) == len(_events(rejected))
    lending = search(viewer, request_source="lending")["items"]
    assert {i["request_id"] for i in lending} == {"req-c"}
    by_request = search(viewer, request_id="req-a", request_source="payments")["items"]
    assert {i["envelope_id"] for i in by_request} == {str(accepted.pk)}
    assert search(viewer, request_id="req-a", request_source="lending")["count"] == 0


def test_search_since_and_until_are_inclusive(viewer, three):
    accepted, escalated, _ = three
    moment = AuditEvent.objects.filter(chain_id=str(escalated.pk)).first().occurred_at
    at = moment.isoformat().replace("+00:00", "Z")
    exactly = search(viewer, since=at, until=at, limit=500)["items"]
    assert {i["envelope_id"] for i in exactly} == {str(escalated.pk)}
    later = (moment + timedelta(microseconds=1)).isoformat()
    assert str(escalated.pk) not in {i["envelope_id"] for i in search(viewer, since=later, limit=500)["items"]}


def test_search_pages_with_a_cursor_in_either_order(viewer, three):
    everything = search(viewer, limit=500)["items"]
    keys = [(i["occurred_at"], i["envelope_id"], i["sequence_no"]) for i in everything]
    assert keys == sorted(keys)
    for order, expected in (("asc", everything), ("desc", everything[::-1])):
        seen, cursor = [], None
        while True:
            params = {"limit": 7, "order": order, **({"cursor": cursor} if cursor else {})}
            page = search(viewer, **params)
            seen += page["items"]
            cursor = page["next_cursor"]
            if cursor is None:
                break
            assert page["count"] == 7
        assert [i["id"] for i in seen] == [i["id"] for i in expected]


@pytest.mark.parametrize(
    "params",
    [
        {"limit": "0"},
        {"limit": "501"},
        {"limit": "ten"},
        {"order": "sideways"},
        {"since": "yesterday"},
        {"until": "2026-01-01"},
        {"since": "2026-02-01T00:00:00Z", "until": "2026-01-01T00:00:00Z"},
        {"envelope_id": "nope"},
        {"cursor": "garbage!"},
        {"cursor": base64.urlsafe_b64encode(b'["asc","x","y",1]').decode()},
        {"event_type": "BAD\x00TYPE"},
        {"request_id": "r\x00"},
        {"event_types": ",".join(f"T{i}" for i in range(51))},
    ],
)
def test_invalid_search_parameters_are_400(viewer, demo, params):
    response = viewer.get("/v1/evidence/audit-events", params)
    assert response.status_code == 400
    assert set(response.json()) == {"error"}


def test_a_cursor_for_one_order_is_refused_in_the_other(viewer, three):
    cursor = search(viewer, limit=2)["next_cursor"]
    response = viewer.get("/v1/evidence/audit-events", {"limit": 2, "cursor": cursor, "order": "desc"})
    assert response.status_code == 400


def test_search_queries_do_not_grow_with_the_page_size(viewer, three):
    counts = []
    for limit in (2, 20):
        with CaptureQueriesContext(connection) as queries:
            assert search(viewer, limit=limit)["count"] == limit
        counts.append(len(queries))
    assert counts[0] == counts[1]


# --- GET /v1/evidence/envelopes/{id}/integrity -------------------------------------------------


def integrity(client, envelope):
    response = client.get(f"/v1/evidence/envelopes/{envelope.pk}/integrity")
    assert response.status_code == 200
    return response.json()


@pytest.mark.parametrize("overrides", [{}, {"confidence": 0.5}, {"agent_id": "agent-nobody"}])
def test_an_untouched_chain_is_valid(viewer, demo, overrides):
    envelope = decide(demo, "req-1", **overrides)
    body = integrity(viewer, envelope)
    assert set(body) == {
        "envelope_id",
        "valid",
        "chain_length",
        "first_event_hash",
        "final_event_hash",
        "checked_at",
    }
    assert body["valid"] is True
    assert body["envelope_id"] == str(envelope.pk)
    assert body["chain_length"] == len(envelope.audit_event_ids)
    assert (body["first_event_hash"], body["final_event_hash"]) == (
        envelope.first_event_hash,
        envelope.final_event_hash,
    )


def test_a_reviewed_envelope_stays_valid(viewer, demo, make_person):
    envelope = decide(demo, "req-1", confidence=0.5)
    assert integrity(viewer, envelope)["chain_length"] == 9
    review_envelope(demo, envelope.pk, "approve", make_person(roles=[Role.GOVERNANCE_REVIEWER]))
    body = integrity(viewer, envelope)
    assert body["valid"] is True and body["chain_length"] == 11
    assert _events(envelope)[-1].event_type == "ENVELOPE_CLOSED"


def test_a_tampered_event_is_valid_false_with_event_hash_mismatch(viewer, demo):
    envelope = decide(demo, "req-1")
    events = _events(envelope)
    _tamper("UPDATE evidence_auditevent SET payload = %s WHERE id = %s", ['{"outcome": "accept"}', _pk(events[4])])
    body = integrity(viewer, envelope)
    assert body["valid"] is False
    assert body["error_kind"] == "event_hash_mismatch"
    assert "event 5" in body["error_message"]
    assert body["chain_length"] == 11


def test_a_rewritten_link_is_prev_hash_mismatch(viewer, demo):
    envelope = decide(demo, "req-1")
    _tamper("UPDATE evidence_auditevent SET prev_hash = %s WHERE id = %s", ["f" * 64, _pk(_events(envelope)[2])])
    body = integrity(viewer, envelope)
    assert (body["valid"], body["error_kind"]) == (False, "prev_hash_mismatch")


def test_a_deleted_tail_event_is_missing_events(viewer, demo):
    envelope = decide(demo, "req-1")
    _tamper("DELETE FROM evidence_auditevent WHERE id = %s", [_pk(_events(envelope)[-1])])
    body = integrity(viewer, envelope)
    assert (body["valid"], body["error_kind"], body["chain_length"]) == (False, "missing_events", 10)
    assert body["final_event_hash"] != envelope.final_event_hash


def test_a_chain_that_does_not_end_in_the_states_terminal_event_is_terminal_state_mismatch(viewer, demo):
    envelope = decide(demo, "req-1")
    Envelope.objects.filter(pk=envelope.pk).update(state="awaiting_review")
    body = integrity(viewer, envelope)
    assert (body["valid"], body["error_kind"]) == (False, "terminal_state_mismatch")


def test_event_ids_are_cross_checked_against_the_envelope(demo):
    envelope = decide(demo, "req-1")
    events = envelope_events(envelope)
    record = IntegrityRecord.of(envelope)
    assert assess_chain(events, record).valid

    def verdict(**changes):
        return assess_chain(events, dataclasses.replace(record, **changes))

    replaced = [*record.audit_event_ids]
    replaced[3] = str(uuid.uuid4())
    broken = verdict(audit_event_ids=replaced)
    assert (broken.valid, broken.error_kind, broken.broken_at) == (False, "missing_events", 4)

    swapped = [*record.audit_event_ids]
    swapped[1], swapped[2] = swapped[2], swapped[1]
    broken = verdict(audit_event_ids=swapped)
    assert (broken.valid, broken.error_kind, broken.broken_at) == (False, "event_hash_mismatch", 2)

    assert verdict(first_event_hash="0" * 64).error_kind == "event_hash_mismatch"


# --- GET /v1/evidence/envelopes/{id}/packet ----------------------------------------------------


def packet_of(client, envelope) -> dict:
    response = client.get(f"/v1/evidence/envelopes/{envelope.pk}/packet")
    assert response.status_code == 200
    return response.json()


def verify_with_jwks_only(packet: dict, jwks: dict) -> bool:
    """What an outside verifier does, with nothing of Mandate's code."""
    key = next(k for k in jwks["keys"] if k["kid"] == packet["kid"])
    public = Ed25519PublicKey.from_public_bytes(base64.urlsafe_b64decode(key["x"] + "=" * (-len(key["x"]) % 4)))
    content = rfc8785.dumps({k: v for k, v in packet.items() if k not in ("signature", "kid")})
    try:
        public.verify(base64.urlsafe_b64decode(packet["signature"] + "=" * (-len(packet["signature"]) % 4)), content)
        return True
    except Exception:
        return False


def test_packet_composes_envelope_events_and_integrity_and_is_signed(viewer, demo, api_client):
    envelope = decide(demo, "req-1", confidence=0.5)
    packet = packet_of(viewer, envelope)
    assert set(packet) == {
        "envelope_id",
        "generated_at",
        "envelope",
        "audit_events",
        "integrity",
        "alg",
        "kid",
        "signature",
    }
    assert packet["envelope_id"] == str(envelope.pk) and packet["alg"] == "EdDSA"
    assert packet["envelope"] == viewer.get(f"/v1/envelopes/{envelope.pk}").json()
    assert packet["envelope"]["submitted"]["raw"]["request_id"] == "req-1"
    assert "submitted" not in packet
    assert packet["audit_events"] == viewer.get(f"/v1/evidence/envelopes/{envelope.pk}/audit-events").json()["items"]
    assert packet["integrity"]["valid"] is True and packet["integrity"]["checked_at"] == packet["generated_at"]
    assert "=" not in packet["signature"]
    jwks = api_client.get("/.well-known/jwks.json").json()
    assert verify_with_jwks_only(packet, jwks)


def write(tmp_path, name, data) -> str:
    path = tmp_path / name
    path.write_text(json.dumps(data))
    return str(path)


def run_verify(*args):
    from io import StringIO

    out = StringIO()
    try:
        call_command("verify_packet", *args, stdout=out)
        code = 0
    except SystemExit as exc:
        code = exc.code
    return code, out.getvalue()


def test_a_packet_verifies_with_the_command_and_with_only_the_jwks(viewer, demo, api_client, tmp_path):
    packet = packet_of(viewer, decide(demo, "req-1"))
    packet_file = write(tmp_path, "packet.json", packet)
    code, out = run_verify(packet_file)
    assert code == 0 and out.startswith("VALID")
    jwks_file = write(tmp_path, "jwks.json", api_client.get("/.well-known/jwks.json").json())
    code, out = run_verify(packet_file, "--jwks", jwks_file)
    assert code == 0 and out.startswith("VALID")


def test_a_packet_altered_after_signing_is_invalid(viewer, demo, tmp_path, api_client):
    packet = packet_of(viewer, decide(demo, "req-1", confidence=0.5))
    jwks = api_client.get("/.well-known/jwks.json").json()
    for alter in (
        lambda p: p["envelope"]["evaluation"].update(outcome="accept"),
        lambda p: p["audit_events"][3]["payload"].update(agent_id="someone-else"),
        lambda p: p["audit_events"].pop(),
        lambda p: p["integrity"].update(valid=False),
        lambda p: p.update(generated_at="2020-01-01T00:00:00.000000Z"),
    ):
        altered = copy.deepcopy(packet)
        alter(altered)
        assert not verify_with_jwks_only(altered, jwks)
        code, out = run_verify(write(tmp_path, "altered.json", altered), "--jwks", write(tmp_path, "jwks.json", jwks))
        assert code == 1 and out.startswith("INVALID: the signature does not match")


def test_a_packet_of_a_tampered_chain_verifies_its_signature_but_is_invalid(viewer, demo, tmp_path):
    envelope = decide(demo, "req-1")
    _tamper("DELETE FROM evidence_auditevent WHERE id = %s", [_pk(_events(envelope)[-1])])
    packet = packet_of(viewer, envelope)
    assert packet["integrity"]["error_kind"] == "missing_events"
    code, out = run_verify(write(tmp_path, "packet.json", packet))
    assert code == 1 and "missing_events" in out


def test_a_packet_whose_integrity_claim_contradicts_its_events_is_invalid(viewer, demo):
    # Even a correctly signed packet is checked against its own events, not trusted.
    envelope = decide(demo, "req-1")
    events = _events(envelope)
    _tamper("UPDATE evidence_auditevent SET payload = %s WHERE id = %s", ['{"x": 1}', _pk(events[2])])
    packet = packet_of(viewer, envelope)
    packet["integrity"] = {k: v for k, v in packet["integrity"].items() if k not in ("error_kind", "error_message")}
    packet["integrity"]["valid"] = True
    signature = sign(KeyAlgorithm.ED25519, signed_content(packet))
    packet["signature"], packet["kid"] = signature.b64url, signature.kid
    verdict = verify_packet(packet)
    assert not verdict.valid and "valid does not match" in verdict.reason


def test_packets_signed_before_a_key_rotation_still_verify(viewer, demo, api_client):
    packet = packet_of(viewer, decide(demo, "req-1"))
    rotate_key(KeyAlgorithm.ED25519)
    assert packet_of(viewer, decide(demo, "req-2"))["kid"] != packet["kid"]
    assert verify_packet(packet, api_client.get("/.well-known/jwks.json").json()).valid
    assert verify_packet(packet).valid


def test_a_packet_signed_by_an_unknown_key_is_invalid(viewer, demo):
    packet = packet_of(viewer, decide(demo, "req-1"))
    verdict = verify_packet(packet, {"keys": []})
    assert not verdict.valid and "no public key" in verdict.reason
    assert verify_packet({**packet, "kid": "ed25519-unknown"}).valid is False


@pytest.mark.parametrize("packet", [[], {}, {"alg": "EdDSA", "kid": 5}, {"alg": "none"}])
def test_malformed_packets_are_invalid_not_errors(packet):
    assert verify_packet(packet).valid is False


def test_an_unreadable_packet_file_is_a_command_error(tmp_path):
    with pytest.raises(CommandError) as raised:
        call_command("verify_packet", str(tmp_path / "missing.json"))
    assert raised.value.returncode == 2


@pytest.mark.django_db(transaction=True)
def test_the_command_fetches_the_jwks_from_a_running_server(organization, client_with, live_server, tmp_path):
    packet = packet_of(client_with(Role.PLATFORM_VIEWER), decide(load_demo(organization), "req-1"))
    code, out = run_verify(write(tmp_path, "packet.json", packet), "--jwks", f"{live_server.url}/.well-known/jwks.json")
    assert code == 0 and out.startswith("VALID")
