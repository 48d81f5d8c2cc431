"""Evidence that can't be poisoned: the edge's domain (UTF-8 I-JSON, bounded depth, storable
timestamps) and verifiers that give a verdict for any row, never a 500 (docs/input.md)."""

import copy
import json
import uuid

import pytest
from django.core.management import CommandError, call_command
from django.db import connection
from rest_framework.test import APIClient

from evidence.models import AuditEvent, LedgerHead
from evidence.services import chain
from evidence.services.chain import EventDraft, append_events, json_native
from evidence.services.verification import verify_chain, verify_ledger
from governance.choices import Role
from tests.database_roles import as_owner_unguarded
from tests.test_channels_api import Agent, agent, owner, register  # noqa: F401
from tests.test_evaluate import payment as valid_body
from tests.test_evidence_api import _events, decide

pytestmark = pytest.mark.django_db


@pytest.fixture
def operator(client_with):
    return client_with(Role.PLATFORM_OPERATOR, Role.PLATFORM_VIEWER)


def post_raw(client, path, raw: bytes, content_type="application/json"):
    return client.post(path, data=raw, content_type=content_type)


# --- the number domain ------------------------------------------------------------------------


@pytest.mark.parametrize("amount", ["1e16", "9007199254740992", "1e300", "-9007199254740993"])
def test_an_amount_beyond_i_json_numbers_is_400_naming_the_field(operator, demo, amount):
    body = json.dumps(valid_body()).replace('"amount": 500', f'"amount": {amount}')
    response = post_raw(operator, "/v1/evaluate", body.encode())
    assert response.status_code == 400, response.content
    assert "consequence.amount" in response.json()["error"]
    assert not AuditEvent.objects.exists()


def test_a_number_beyond_i_json_in_the_context_is_400(operator, demo):
    body = json.dumps(valid_body(context={"n": 1})).replace('"n": 1', '"n": 12345678901234567890')
    response = post_raw(operator, "/v1/evaluate", body.encode())
    assert response.status_code == 400
    assert "context.n" in response.json()["error"]


def test_the_largest_safe_integer_is_accepted(operator, demo):
    response = operator.post("/v1/evaluate", valid_body(context={"n": 2**53 - 1}), format="json")
    assert response.status_code == 200, response.content


def test_json_native_keeps_large_floats_as_their_digits_so_the_hash_is_of_what_is_stored():
    assert json_native({"a": 1e16, "b": -1e17, "c": 2.5}) == {
        "a": "10000000000000000",
        "b": "-100000000000000000",
        "c": 2.5,
    }


def test_an_event_with_a_large_float_written_today_verifies(demo):
    event = append_events("chain:large", [EventDraft("X", {"amount": 1e16})])[0]
    assert AuditEvent.objects.get(pk=event.pk).payload == {"amount": "10000000000000000"}
    assert verify_chain("chain:large").valid
    assert verify_ledger().valid


def test_a_channel_payload_beyond_i_json_numbers_is_400(agent):  # noqa: F811
    response = agent.submit(type="approval_request", title="t", payload={"n": 1e16})
    assert response.status_code == 400, response.content


def test_a_bundle_number_beyond_i_json_is_a_document_error():
    from controlplane.services.documents import parse_bundle

    document = parse_bundle(b"apiVersion: mandate/v1\nkind: Capability\nmetadata: {id: cap-1}\nspec: {n: 1.0e+16}\n")[0]
    assert [error["field"] for error in document.errors] == ["spec.n"]


# --- legacy rows and rows no writer made: verdicts, never 500s ---------------------------------


def _insert_raw_event(chain_id: str, sequence_no: int, payload_text: str) -> None:
    """An audit event written straight into the table, bypassing the writer."""
    # Written as someone with the schema owner's access would (the app role may not insert
    # audit events directly).
    with as_owner_unguarded("evidence_ledgerhead"):
        head = LedgerHead.objects.get(pk=1)
        prev = AuditEvent.objects.filter(chain_id=chain_id).order_by("-sequence_no").first()
        with connection.cursor() as cursor:
            cursor.execute(
                "INSERT INTO evidence_auditevent (id, chain_id, sequence_no, event_type, performer_type, performer_id,"
                " payload, occurred_at, prev_hash, hash, ledger_seq, ledger_prev_hash, ledger_hash)"
                " VALUES (%s, %s, %s, 'X', 'system', 'mandate', %s, %s, %s, %s, %s, %s, %s)",
                [
                    uuid.uuid4().hex if connection.vendor == "sqlite" else str(uuid.uuid4()),
                    chain_id,
                    sequence_no,
                    payload_text,
                    prev.occurred_at,
                    prev.hash,
                    "a" * 64,
                    head.seq + 1,
                    head.hash,
                    "b" * 64,
                ],
            )
        LedgerHead.objects.filter(pk=1).update(seq=head.seq + 1, hash="b" * 64)


def test_a_row_holding_an_integer_beyond_jcs_is_a_verdict_everywhere(operator, demo):
    envelope = decide(demo, "req-raw")
    _insert_raw_event(str(envelope.pk), len(_events(envelope)) + 1, '{"amount": 10000000000000000}')

    integrity = operator.get(f"/v1/evidence/envelopes/{envelope.pk}/integrity")
    assert integrity.status_code == 200
    assert (integrity.json()["valid"], integrity.json()["error_kind"]) == (False, "non_canonical_payload")
    packet = operator.get(f"/v1/evidence/envelopes/{envelope.pk}/packet")
    assert packet.status_code == 200
    assert packet.json()["integrity"]["error_kind"] == "non_canonical_payload"
    verify = operator.get("/v1/audit/verify")
    assert verify.status_code == 200
    assert verify.json()["intact"] is False
    verdict = verify_ledger()
    assert verdict.error_kind == "non_canonical_payload"
    with pytest.raises(CommandError, match="non_canonical_payload"):
        call_command("verify_ledger")


def test_an_untampered_row_written_with_1e16_before_the_domain_verifies(monkeypatch, demo):
    # Exactly what the writer did before: the payload kept as given, the float 1e16 hashed as
    # JCS writes it and stored as JSON, which Postgres reads back as the integer.
    monkeypatch.setattr(chain, "json_native", copy.deepcopy)
    event = append_events("chain:legacy", [EventDraft("X", {"amount": 1e16, "n": 1})])[0]
    monkeypatch.undo()
    stored = AuditEvent.objects.get(pk=event.pk).payload["amount"]
    assert stored == 10**16
    assert verify_chain("chain:legacy").valid
    assert verify_ledger().valid
    call_command("verify_ledger")


def test_a_packet_holding_a_legacy_1e16_row_verifies_offline(monkeypatch, demo):
    from envelopes.evaluation.engine import EvaluationRequest, evaluate
    from envelopes.models import Envelope
    from envelopes.services.packets import build_packet, verify_packet

    # The old writer: the evaluation's events hashed 1e16 as a float, stored it as JSON.
    monkeypatch.setattr(chain, "json_native", copy.deepcopy)
    body = valid_body(consequence={"type": "monetary", "amount": 1e16, "currency": "GBP"})
    answer = evaluate(demo, EvaluationRequest(**body), json.dumps(body), performer_id="test")
    monkeypatch.undo()
    envelope = Envelope.objects.get(pk=answer["envelope_id"])
    assert verify_chain(envelope.chain_id).valid
    packet = json.loads(json.dumps(build_packet(envelope)))
    verdict = verify_packet(packet)
    assert verdict.valid, verdict.reason


# --- encoding ----------------------------------------------------------------------------------


@pytest.mark.parametrize("text", ['"acc-\\ud800"', '"acc-\\udc00x"', '"a\\u0000b"'])
def test_lone_surrogates_and_nul_in_the_evaluate_context_are_400(operator, demo, text):
    body = json.dumps(valid_body(context={"account_id": "X"})).replace('"X"', text)
    response = post_raw(operator, "/v1/evaluate", body.encode())
    assert response.status_code == 400, response.content
    assert "context.account_id" in response.json()["error"]


def test_a_lone_surrogate_in_a_key_is_400(operator, demo):
    body = json.dumps(valid_body(context={"K": 1})).replace('"K"', '"\\ud800"')
    response = post_raw(operator, "/v1/evaluate", body.encode())
    assert response.status_code == 400
    assert "key" in response.json()["error"]


@pytest.mark.parametrize("text", ['"\\u0000"', '"\\ud800"'])
def test_nul_and_lone_surrogates_in_a_channel_payload_are_400(agent, text):  # noqa: F811
    body = json.dumps({"type": "approval_request", "title": "t", "payload": {"note": "X"}}).replace('"X"', text)
    response = post_raw(agent.client, f"/api/channels/{agent.channel_id}/requests", body.encode())
    assert response.status_code == 400, response.content


def test_a_body_in_another_charset_is_415(operator, demo):
    response = post_raw(
        operator, "/v1/evaluate", json.dumps(valid_body()).encode("utf-16"), "application/json; charset=utf-16"
    )
    assert response.status_code == 415
    assert "UTF-8" in response.json()["error"]


def test_a_body_that_is_not_utf8_is_400(operator, demo):
    response = post_raw(operator, "/v1/evaluate", json.dumps(valid_body()).encode("utf-16"))
    assert response.status_code == 400
    assert response.json()["error"].startswith("malformed request body")


@pytest.mark.parametrize(
    "body",
    [b"\xef\xbb\xbf{}", b'{"a": NaN}', b'{"a": -Infinity}', b'{"a": 1e999}', b"[1,2", b"", b'{"a": 1} x'],
)
def test_a_body_json_refuses_is_refused_with_the_json_parsers_own_words(body):
    from rest_framework.exceptions import ParseError

    from governance.api.parsers import _finite, _refuse_constant, parse_strict_json

    with pytest.raises(ValueError) as stdlib:
        json.loads(body.decode("utf-8"), parse_float=_finite, parse_constant=_refuse_constant)
    with pytest.raises(ParseError) as refused:
        parse_strict_json(body)
    assert refused.value.detail == f"JSON parse error - {stdlib.value}"


# --- depth -------------------------------------------------------------------------------------


def test_a_context_nested_deeper_than_32_levels_is_400(operator, demo):
    deep = {}
    node = deep
    for _ in range(500):
        node["a"] = {}
        node = node["a"]
    response = operator.post("/v1/evaluate", valid_body(context=deep), format="json")
    assert response.status_code == 400
    assert "nested deeper than 32 levels" in response.json()["error"]


def test_a_context_within_the_depth_limit_is_accepted_and_packs(operator, demo):
    deep = node = {}
    for _ in range(29):  # body 1, context 2, then 29 more: 31 levels plus its leaf
        node["a"] = {}
        node = node["a"]
    response = operator.post("/v1/evaluate", valid_body(context=deep), format="json")
    assert response.status_code == 200, response.content
    packet = operator.get(f"/v1/evidence/envelopes/{response.json()['envelope_id']}/packet")
    assert packet.status_code == 200 and packet.json()["integrity"]["valid"] is True


# --- timestamps --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "name", "value"),
    [
        ("/v1/envelopes", "until", "2026-09-15T01:00:31.8+21:53"),
        ("/v1/envelopes", "since", "2026-09-15T01:00:31.8-21:35"),
        ("/v1/controlplane/audit", "until", "2026-09-15T01:00:31.8+21:53"),
        ("/v1/controlplane/audit", "since", "2026-09-15T01:00:31.8-16:00"),
        ("/v1/evidence/audit-events", "since", "0001-01-01T00:00:00+01:00"),
    ],
)
def test_offsets_postgres_cannot_hold_are_400_naming_the_parameter(admin_client_api, demo, path, name, value):
    response = admin_client_api.get(path, {name: value})
    assert response.status_code == 400, response.content
    assert response.json()["error"].startswith(name)


def test_an_offset_of_15_59_is_accepted(admin_client_api, demo):
    response = admin_client_api.get("/v1/envelopes", {"until": "2026-09-15T01:00:31.8+15:59"})
    assert response.status_code == 200, response.content


def test_a_request_expiry_with_an_impossible_offset_is_400(agent):  # noqa: F811
    response = agent.submit(type="approval_request", title="t", expires_at="2030-01-01T00:00:00+20:00")
    assert response.status_code == 400, response.content


def test_unauthenticated_hostile_bodies_still_answer_json():
    response = post_raw(APIClient(), "/v1/evaluate", b'{"a": "\\ud800"}')
    assert response.status_code in (400, 401)
    assert "error" in response.json()


def test_an_envelope_stored_600_levels_deep_before_the_limit_still_packs_verifies_and_shows(demo, client, make_person):
    """Stored before the edge refused deep nesting: its packet is built (the walkers are
    iterative), verifies offline, and its review page renders."""
    from envelopes.evaluation.engine import EvaluationRequest, evaluate
    from envelopes.models import Envelope
    from envelopes.services.packets import build_packet, verify_packet

    deep = "x"
    for _ in range(600):
        deep = {"k": deep}
    body = valid_body(context={"account_id": "acc-1", "destination_country": "GB", "deep": deep})
    answer = evaluate(demo, EvaluationRequest(**body), json.dumps(body), performer_id="test")  # the service: no edge
    envelope = Envelope.objects.get(pk=answer["envelope_id"])
    packet = json.loads(json.dumps(build_packet(envelope)))
    assert verify_packet(packet).valid
    assert verify_chain(envelope.chain_id).valid
    client.force_login(make_person(roles=(Role.PLATFORM_VIEWER,), username="viewer"))
    assert client.get(f"/admin/envelopes/envelope/{envelope.pk}/review/").status_code == 200
