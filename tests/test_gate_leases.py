"""POST /v1/leases: what a lease says, who may have one, and the endpoint's limits."""

import json
import re
import time
from datetime import UTC, datetime

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from rest_framework.test import APIClient

from evidence.choices import KeyAlgorithm
from evidence.services.keys import rotate_key
from governance.choices import Role
from governance.gate import jws
from governance.gate.auth import authenticate_lease, forget_cached_leases
from governance.gate.rate_limit import TokenBucket
from governance.gate.signals import lease_issued
from governance.gate.state import advance_epoch, end_drain, start_drain
from governance.models import GateLease
from tests import gate_client
from tests.gate_client import lease_body, make_key

pytestmark = pytest.mark.django_db

EXECUTE = "/v1/actions/http_fetch/execute"


def post_lease(client, body) -> "tuple[int, dict]":
    response = client.post("/v1/leases", json.dumps(body), content_type="application/json")
    return response.status_code, response.json()


def claims_of(token: str) -> tuple[dict, dict]:
    header, payload, _ = token.split(".")
    return jws.read_json_segment(header), jws.read_json_segment(payload)


@pytest.fixture
def operator(client_with):
    return client_with(Role.PLATFORM_OPERATOR)


@pytest.fixture
def open_leases(settings):
    settings.MANDATE_GATE_OPEN_LEASES = True


def authenticates(lease) -> bool:
    context = authenticate_lease("POST", EXECUTE, f"DPoP {lease.lease_jwt}", lease.proof("POST", EXECUTE))
    return context.lease_jti == lease.lease_jti


# --- what a lease is -----------------------------------------------------------------------------


def test_lease_answers_the_four_fields_and_its_jwt_carries_the_contract_claims(operator, settings):
    key = make_key()
    before = int(time.time())
    status, body = post_lease(operator, lease_body(key, budgets={"max_calls": 5, "max_cost_usd_cents": 250}))
    assert status == 200, body
    assert set(body) == {"lease_jwt", "session_id", "lease_jti", "expires_at"}
    assert re.fullmatch(r"ses_[0-9a-f]{32}", body["session_id"])
    assert re.fullmatch(r"lea_[0-9a-f]{32}", body["lease_jti"])
    # What LatchGate's SDK does with it (and Python 3.10's stricter parser, without "Z").
    expires = datetime.fromisoformat(body["expires_at"].replace("Z", "+00:00"))
    assert datetime.fromisoformat(body["expires_at"]) == expires
    assert body["expires_at"].endswith("Z")

    header, claims = claims_of(body["lease_jwt"])
    assert header["alg"] == "ES256" and header["kid"]
    assert claims["iss"] == settings.PUBLIC_BASE_URL
    assert claims["aud"] == "mandate-gate"
    assert claims["sub"].startswith("person")  # the token holder's username, by default
    assert claims["jti"] == body["lease_jti"] and claims["session_id"] == body["session_id"]
    assert claims["scope"] == ["tools:call"]
    assert claims["budgets"] == {"max_calls": 5, "max_cost_usd_cents": 250}
    assert claims["cnf"] == {"jkt": key.jkt}
    assert claims["epoch"] == 0
    assert before <= claims["iat"] == claims["nbf"] <= int(time.time())
    assert claims["exp"] - claims["iat"] == 300
    assert expires == datetime.fromtimestamp(claims["exp"], UTC)

    row = GateLease.objects.get(lease_jti=body["lease_jti"])
    assert (row.session_id, row.agent_id, row.jkt, row.epoch, row.kid) == (
        body["session_id"],
        claims["sub"],
        key.jkt,
        0,
        header["kid"],
    )
    assert row.identity.startswith("token:") and row.scopes == ["tools:call"]


def test_the_published_jwks_alone_verifies_a_lease(operator, client):
    token = gate_client.lease(operator).lease_jwt
    header, _ = claims_of(token)
    keys = {jwk["kid"]: jwk for jwk in client.get("/.well-known/jwks.json").json()["keys"]}
    assert keys[header["kid"]]["kty"] == "EC" and keys[header["kid"]]["crv"] == "P-256"
    signing_input, _, signature = token.rpartition(".")
    public = jws.p256_public_key({k: keys[header["kid"]][k] for k in ("kty", "crv", "x", "y")})
    assert jws.es256_verify(public, signing_input.encode(), jws.b64url_decode(signature))
    assert not jws.es256_verify(public, signing_input.encode() + b"x", jws.b64url_decode(signature))


def test_agent_id_names_the_lease_subject(operator):
    status, body = post_lease(operator, lease_body(make_key(), agent_id="agent-ops"))
    assert status == 200
    assert claims_of(body["lease_jwt"])[1]["sub"] == "agent-ops"


@pytest.mark.parametrize(("configured", "lifetime"), [(120, 120), (300, 300), (7200, 3600), (0, 1)])
def test_lease_lifetime_is_the_setting_clamped_to_an_hour(operator, settings, configured, lifetime):
    settings.MANDATE_GATE_LEASE_TTL_SECONDS = configured
    _, body = post_lease(operator, lease_body(make_key()))
    claims = claims_of(body["lease_jwt"])[1]
    assert claims["exp"] - claims["iat"] == lifetime


def test_a_lease_carries_the_current_epoch(operator):
    advance_epoch("test")
    _, body = post_lease(operator, lease_body(make_key()))
    assert claims_of(body["lease_jwt"])[1]["epoch"] == 1


def test_issuing_announces_the_lease_inside_its_transaction(operator):
    seen = []

    def receiver(sender, lease, **kwargs):
        from django.db import connection

        seen.append((lease.lease_jti, connection.in_atomic_block))

    lease_issued.connect(receiver)
    try:
        issued = gate_client.lease(operator)
    finally:
        lease_issued.disconnect(receiver)
    assert seen == [(issued.lease_jti, True)]


# --- keys -----------------------------------------------------------------------------------


def test_a_lease_outlives_a_key_rotation_and_a_restart(operator, client):
    old = gate_client.lease(operator)
    rotate_key(KeyAlgorithm.ES256)
    new = gate_client.lease(operator)
    old_kid, new_kid = claims_of(old.lease_jwt)[0]["kid"], claims_of(new.lease_jwt)[0]["kid"]
    assert old_kid != new_kid
    published = {jwk["kid"] for jwk in client.get("/.well-known/jwks.json").json()["keys"]}
    assert {old_kid, new_kid} <= published
    # A restart: nothing in memory, the keys come from the database.
    forget_cached_leases()
    from evidence.services import keys

    keys._private_key.cache_clear()
    assert authenticates(old) and authenticates(new)


# --- the request ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        {"fs_root": "/tmp"},
        {"budgets": {"max_calls": 3, "max_tokens": 9}},
        {"dpop_jwk": {**make_key().jwk, "n": "AQAB"}},
    ],
    ids=["top-level", "in-budgets", "in-dpop-jwk"],
)
def test_unknown_fields_are_400_invalid_request(operator, body):
    status, answer = post_lease(operator, {**lease_body(make_key()), **body})
    assert status == 400
    assert answer["error"] == "invalid_request" and answer["reason"]
    assert not GateLease.objects.exists()


def _off_curve() -> dict:
    jwk = dict(make_key().jwk)
    jwk["y"] = jws.b64url((int.from_bytes(jws.b64url_decode(jwk["y"]), "big") ^ 1).to_bytes(32, "big"))
    return jwk


@pytest.mark.parametrize(
    "change",
    [
        {"scopes": None},
        {"scopes": []},
        {"scopes": "tools:call"},
        {"scopes": ["Tools:Call"]},
        {"scopes": ["nocolon"]},
        {"scopes": ["ns:"]},
        {"scopes": [7]},
        {"dpop_jwk": None},
        {"dpop_jwk": {"kty": "RSA", "n": "AQAB", "e": "AQAB"}},
        {"dpop_jwk": make_key(ec.SECP384R1()).jwk},
        {"dpop_jwk": _off_curve()},
        {"dpop_jwk": {**make_key().jwk, "d": "AAAA"}},
        {"dpop_jwk": {k: v for k, v in make_key().jwk.items() if k != "y"}},
        {"budgets": {"max_calls": -1}},
        {"budgets": {"max_calls": True}},
        {"budgets": {"max_calls": "5"}},
        {"budgets": {"max_cost_usd_cents": 1.5}},
        {"budgets": [5]},
        {"agent_id": "has space"},
        {"agent_id": ""},
        {"agent_id": 7},
    ],
)
def test_malformed_requests_are_400_invalid_request(operator, change):
    body = {**lease_body(make_key()), **change}
    if body.get("scopes") is None:
        body.pop("scopes")
    if body.get("dpop_jwk") is None:
        body.pop("dpop_jwk")
    status, answer = post_lease(operator, body)
    assert (status, answer["error"]) == (400, "invalid_request"), answer


@pytest.mark.parametrize("raw", [b"{", b"[]", b'"scopes"', b'{"scopes": NaN}'])
def test_a_body_that_is_not_a_json_object_is_400_invalid_request(operator, raw):
    response = operator.post("/v1/leases", raw, content_type="application/json")
    assert response.status_code == 400 and response.json()["error"] == "invalid_request"


def test_zero_budgets_are_accepted(operator):
    status, body = post_lease(operator, lease_body(make_key(), budgets={"max_calls": 0}))
    assert status == 200
    assert claims_of(body["lease_jwt"])[1]["budgets"] == {"max_calls": 0}


# --- who may have one -----------------------------------------------------------------------------


def test_without_a_credential_a_lease_is_401_unless_open_leases_are_on(settings):
    client = APIClient()
    status, body = post_lease(client, lease_body(make_key()))
    assert (status, body) == (401, {"error": "identity_unauthenticated"})
    settings.MANDATE_GATE_OPEN_LEASES = True
    status, body = post_lease(client, lease_body(make_key(), scopes=["tools:call", "audit:read", "email:send"]))
    assert status == 200
    claims = claims_of(body["lease_jwt"])[1]
    assert claims["sub"] == "anonymous" and claims["scope"] == ["tools:call", "audit:read", "email:send"]
    assert GateLease.objects.get(lease_jti=body["lease_jti"]).identity == "open"


def test_an_sdk_lease_request_with_stray_dpop_headers_counts_as_no_credential(open_leases):
    earlier = gate_client.lease(APIClient())
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"DPoP {earlier.lease_jwt}", HTTP_DPOP=earlier.proof("POST", "/v1/leases"))
    status, body = post_lease(client, lease_body(make_key(), agent_id="sdk-agent"))
    assert status == 200 and claims_of(body["lease_jwt"])[1]["sub"] == "sdk-agent"


def test_a_wrong_bearer_token_is_401_identity_unauthenticated(open_leases):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION="Bearer mdt_000000000000_nope")
    status, body = post_lease(client, lease_body(make_key()))
    assert (status, body) == (401, {"error": "identity_unauthenticated"})


def test_a_person_without_the_operator_role_is_403_identity_forbidden(client_with):
    status, body = post_lease(client_with(Role.PLATFORM_VIEWER), lease_body(make_key()))
    assert (status, body) == (403, {"error": "identity_forbidden"})


def test_an_admin_may_have_operator_scopes(client_with):
    status, body = post_lease(client_with(Role.PLATFORM_ADMIN), lease_body(make_key(), scopes=["audit:read"]))
    assert status == 200 and claims_of(body["lease_jwt"])[1]["scope"] == ["audit:read"]


@pytest.fixture
def channel_client(demo, make_person):
    """An agent channel's key, the channel linked to the demo's agent-payments-prod."""
    from envelopes.requests.channels import create_invite, register_channel

    _, invite = create_invite(make_person(roles=[Role.GOVERNANCE_APPROVER]))
    _, key, _ = register_channel(invite, name="payments bot", agent_id="agent-payments-prod")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    return client


def test_a_channel_key_leases_for_its_own_agent_without_operator_scopes(channel_client):
    scopes = ["tools:call", "audit:read", "admin:nuke", "email:send"]
    status, body = post_lease(channel_client, lease_body(make_key(), scopes=scopes))
    assert status == 200, body
    claims = claims_of(body["lease_jwt"])[1]
    assert claims["sub"] == "agent-payments-prod"
    assert claims["scope"] == ["tools:call", "email:send"]
    assert GateLease.objects.get(lease_jti=body["lease_jti"]).identity.startswith("channel:")


def test_a_channel_key_cannot_lease_for_another_agent(channel_client):
    status, body = post_lease(channel_client, lease_body(make_key(), agent_id="agent-someone-else"))
    assert (status, body) == (403, {"error": "identity_forbidden"})
    status, _ = post_lease(channel_client, lease_body(make_key(), agent_id="agent-payments-prod"))
    assert status == 200


def test_a_channel_asking_only_for_operator_scopes_is_403_scope_not_permitted(channel_client):
    status, body = post_lease(channel_client, lease_body(make_key(), scopes=["audit:read", "admin:nuke"]))
    assert (status, body) == (403, {"error": "scope_not_permitted"})


# --- limits ---------------------------------------------------------------------------------------


def test_lease_issuance_is_rate_limited_per_process(operator, settings):
    settings.MANDATE_GATE_LEASE_RATE_PER_SECOND = 3
    statuses = [post_lease(operator, lease_body(make_key())) for _ in range(4)]
    assert [status for status, _ in statuses[:3]] == [200, 200, 200]
    assert statuses[3] == (429, {"error": "rate_limit_exceeded"})


def test_the_default_rate_is_fifty_a_second_with_a_one_second_burst(settings):
    assert settings.MANDATE_GATE_LEASE_RATE_PER_SECOND == 50
    now = [100.0]
    bucket = TokenBucket(50, clock=lambda: now[0])
    assert sum(bucket.take() for _ in range(60)) == 50
    now[0] += 0.5  # 25 tokens come back in half a second
    assert sum(bucket.take() for _ in range(40)) == 25
    now[0] += 10  # never more than the burst
    assert sum(bucket.take() for _ in range(60)) == 50


def test_a_draining_gate_issues_no_lease_until_the_drain_ends(operator):
    start_drain("ops")
    status, body = post_lease(operator, lease_body(make_key()))
    assert (status, body) == (503, {"error": "draining"})
    assert not GateLease.objects.exists()
    end_drain("ops")
    assert post_lease(operator, lease_body(make_key()))[0] == 200


def test_an_oversized_body_is_refused(operator):
    status, _ = post_lease(operator, {**lease_body(make_key()), "agent_id": "a" * 20_000})
    assert status == 413


def test_the_openapi_schema_documents_the_lease_endpoint(client):
    schema = client.get("/api/schema/", HTTP_ACCEPT="application/json").json()
    operation = schema["paths"]["/v1/leases"]["post"]
    assert {"200", "400", "401", "403", "429", "503"} <= set(operation["responses"])
    assert "operatorKey" in schema["components"]["securitySchemes"]
