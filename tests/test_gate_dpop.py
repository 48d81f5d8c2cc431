"""Leases and DPoP proofs on a protected call: ``authenticate_lease`` (what the execute
pipeline calls) and ``LeaseAuthentication`` (DRF), every way a call can be refused."""

import json
import time
import types
import uuid

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from django.db import connection
from django.utils import timezone
from rest_framework.response import Response
from rest_framework.test import APIClient, APIRequestFactory
from rest_framework.views import APIView

from governance.api.authentication import LeaseAuthentication, lease_of
from governance.choices import Role
from governance.errors import GateError
from governance.gate import auth, jws, replay
from governance.gate.dpop import normalize_htu
from governance.gate.state import advance_epoch
from governance.models import DpopReplay, GateLease
from tests import gate_client
from tests.faults import free_port
from tests.gate_client import DROP, make_key

pytestmark = pytest.mark.django_db

PATH = "/v1/actions/http_fetch/execute"


@pytest.fixture
def operator(client_with):
    return client_with(Role.PLATFORM_OPERATOR)


@pytest.fixture
def lease(operator):
    return gate_client.lease(operator, budgets={"max_calls": 3})


def call(lease, method="POST", path=PATH, *, authorization=None, dpop=None, **overrides):
    """authenticate_lease as the pipeline calls it; the proof is fresh unless given."""
    return auth.authenticate_lease(
        method,
        path,
        authorization if authorization is not None else f"DPoP {lease.lease_jwt}",
        dpop if dpop is not None else lease.proof(method, path, **overrides),
    )


def refused(lease, **kwargs) -> GateError:
    with pytest.raises(GateError) as caught:
        call(lease, **kwargs)
    return caught.value


def assert_invalid_dpop(error: GateError, mentions: str = "") -> None:
    assert (error.status, error.code) == (401, "invalid_dpop")
    assert error.deny_reason and mentions in error.deny_reason


def test_a_fresh_proof_with_its_lease_names_the_agent(lease):
    context = call(lease)
    row = GateLease.objects.get(lease_jti=lease.lease_jti)
    assert context.lease_jti == lease.lease_jti and context.session_id == lease.session_id
    assert context.agent_id == row.agent_id and context.organization_id == str(row.organization_id)
    assert context.scopes == ("tools:call",) and context.budgets.max_calls == 3
    assert context.jkt == lease.key.jkt and context.epoch == 0
    assert context.identity == row.identity
    assert abs(context.expires_at.timestamp() - row.expires_at.timestamp()) < 1
    uuid.UUID(context.proof_jti)  # the SDK's UUID4


@pytest.mark.redis
def test_a_cached_lease_costs_no_query(lease, django_assert_max_num_queries, settings):
    if not settings.REDIS_URL:
        pytest.skip("needs REDIS_URL (without it, the replay record is a row)")
    call(lease)
    with django_assert_max_num_queries(0):
        call(lease)


# --- headers -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("authorization", "dpop"), [("", None), (None, ""), ("", "")])
def test_a_missing_header_is_missing_auth_header(lease, authorization, dpop):
    auth_value = f"DPoP {lease.lease_jwt}" if authorization is None else authorization
    dpop_value = lease.proof("POST", PATH) if dpop is None else dpop
    with pytest.raises(GateError) as caught:
        auth.authenticate_lease("POST", PATH, auth_value, dpop_value)
    assert (caught.value.status, caught.value.code) == (401, "missing_auth_header")


def test_bearer_instead_of_dpop_is_invalid_lease(lease):
    error = refused(lease, authorization=f"Bearer {lease.lease_jwt}")
    assert (error.status, error.code) == (401, "invalid_lease")


def test_the_scheme_is_case_insensitive(lease):
    assert call(lease, authorization=f"dpop {lease.lease_jwt}").lease_jti == lease.lease_jti


# --- the proof ------------------------------------------------------------------------------------


def test_a_proof_for_another_method_is_refused(lease):
    assert_invalid_dpop(refused(lease, dpop=lease.proof("GET", PATH)), "htm")


def test_htm_must_be_upper_case(lease):
    assert_invalid_dpop(refused(lease, claims={"htm": "post"}), "htm")


@pytest.mark.parametrize(
    "htu",
    [
        "http://127.0.0.1:8080/v1/actions/other/execute",
        "http://testserver" + PATH,  # the Host header is never trusted
        "http://127.0.0.1:8081" + PATH,
        "https://127.0.0.1:8080" + PATH,
        "http://127.0.0.1:8080" + PATH.upper(),  # the path keeps its case
        PATH,  # not absolute
    ],
)
def test_a_proof_for_another_url_is_refused(lease, htu):
    assert_invalid_dpop(refused(lease, claims={"htu": htu}), "htu")


@pytest.mark.parametrize(
    "htu",
    [
        "https://GATE.Example.COM:443/v1/actions/http_fetch/execute",
        "HTTPS://gate.example.com/v1/actions/http_fetch/execute?x=1#frag",
        "https://gate.example.com/v1/actions/http_fetch/execute#only-a-fragment",
    ],
)
def test_htu_is_compared_after_normalization(operator, settings, htu):
    settings.PUBLIC_BASE_URL = "https://gate.example.com"
    lease = gate_client.lease(operator)
    assert call(lease, claims={"htu": htu}).lease_jti == lease.lease_jti


def test_normalization_of_urls():
    assert normalize_htu("HTTP://Example.COM:80/A/b?c#d") == "http://example.com/A/b"
    assert normalize_htu("https://example.com:8443") == "https://example.com:8443/"
    assert normalize_htu("http://[::1]:80/x") == "http://[::1]/x"
    assert normalize_htu("http://[::1]/x") == "http://[::1]/x"
    assert normalize_htu("https://example.com:80/x") == "https://example.com:80/x"
    for bad in ("/v1/x", "example.com/x", "http:///x", "://x"):
        with pytest.raises(ValueError):
            normalize_htu(bad)


@pytest.mark.parametrize(("offset", "accepted"), [(-61, False), (-55, True), (0, True), (4, True), (7, False)])
def test_iat_must_lie_within_sixty_seconds_before_and_five_after(lease, offset, accepted):
    claims = {"iat": int(time.time()) + offset}
    if accepted:
        assert call(lease, claims=claims).lease_jti == lease.lease_jti
    else:
        assert_invalid_dpop(refused(lease, claims=claims), "iat")


@pytest.mark.parametrize("iat", ["1700000000", True, None])
def test_iat_must_be_a_number(lease, iat):
    assert_invalid_dpop(refused(lease, claims={"iat": iat}), "iat")


def test_a_proof_by_another_key_is_refused(lease):
    stranger = make_key()
    assert_invalid_dpop(refused(lease, dpop=stranger.proof("POST", PATH, lease.lease_jwt)), "key binding")


def test_a_proof_naming_the_bound_key_but_signed_by_another_is_refused(lease):
    assert_invalid_dpop(refused(lease, signer=make_key()), "signature")


def test_a_proof_for_another_token_is_refused(lease, operator):
    other = gate_client.lease(operator, lease.key)  # same key, another lease
    assert_invalid_dpop(refused(lease, claims={"ath": gate_client.ath(other.lease_jwt)}), "ath")


@pytest.mark.parametrize("claim", ["jti", "htm", "htu", "iat", "ath"])
def test_every_claim_is_required(lease, claim):
    assert_invalid_dpop(refused(lease, claims={claim: DROP}), claim)


def test_jti_is_bounded(lease):
    assert_invalid_dpop(refused(lease, claims={"jti": "j" * 257}), "jti")
    assert_invalid_dpop(refused(lease, claims={"jti": ""}), "jti")


def _resign_with(proof: str, *, header=None, claims=None) -> str:
    """The proof with one segment re-encoded and the original signature kept (tampering)."""
    header_b64, payload_b64, signature = proof.split(".")
    if header is not None:
        header_b64 = gate_client.segment({**jws.read_json_segment(header_b64), **header})
    if claims is not None:
        payload_b64 = gate_client.segment({**jws.read_json_segment(payload_b64), **claims})
    return f"{header_b64}.{payload_b64}.{signature}"


def test_a_tampered_header_is_refused(lease):
    tampered = _resign_with(lease.proof("POST", PATH), header={"kid": "mine"})
    assert_invalid_dpop(refused(lease, dpop=tampered), "signature")


def test_a_tampered_payload_is_refused(lease):
    tampered = _resign_with(lease.proof("POST", PATH), claims={"jti": str(uuid.uuid4())})
    assert_invalid_dpop(refused(lease, dpop=tampered), "signature")


def test_a_proof_without_a_jwk_is_refused(lease):
    assert_invalid_dpop(refused(lease, header={"jwk": DROP}), "jwk")


@pytest.mark.parametrize(
    ("header", "mentions"),
    [
        ({"typ": "JWT"}, "typ"),
        ({"typ": DROP}, "typ"),
        ({"alg": "ES384"}, "alg"),
        ({"alg": "none"}, "alg"),
        ({"alg": "HS256"}, "alg"),
    ],
)
def test_wrong_typ_or_alg_is_refused(lease, header, mentions):
    assert_invalid_dpop(refused(lease, header=header), mentions)


def test_a_non_p256_key_is_refused(lease):
    p384 = make_key(ec.SECP384R1())
    proof = p384.proof("POST", PATH, lease.lease_jwt)
    assert_invalid_dpop(refused(lease, dpop=proof), "P-256")


def test_a_jwk_off_the_curve_is_refused(lease):
    jwk = dict(lease.key.jwk)
    jwk["y"] = jws.b64url((int.from_bytes(jws.b64url_decode(jwk["y"]), "big") ^ 1).to_bytes(32, "big"))
    assert_invalid_dpop(refused(lease, header={"jwk": jwk}), "point on P-256")


def test_a_jwk_with_a_private_part_is_refused(lease):
    assert_invalid_dpop(refused(lease, header={"jwk": {**lease.key.jwk, "d": "AAAA"}}), "private")


@pytest.mark.parametrize("proof", ["abc", "a.b", "a.b.c.d", "!!.@@.##", "e30.e30.", "W10.e30.AAAA"])
def test_a_malformed_proof_is_refused(lease, proof):
    assert_invalid_dpop(refused(lease, dpop=proof))


# --- single use -----------------------------------------------------------------------------------


@pytest.mark.redis
def test_a_replayed_proof_is_refused_in_redis(lease, settings):
    if not settings.REDIS_URL:
        pytest.skip("needs REDIS_URL")
    proof = lease.proof("POST", PATH)
    call(lease, dpop=proof)
    error = refused(lease, dpop=proof)
    assert (error.status, error.code) == (401, "replay_detected")
    assert not DpopReplay.objects.exists()


def test_a_replayed_proof_is_refused_by_the_table_without_redis(lease, settings):
    settings.REDIS_URL = ""
    proof = lease.proof("POST", PATH)
    call(lease, dpop=proof)
    remembered = DpopReplay.objects.get()
    assert 175 <= (remembered.expires_at - timezone.now()).total_seconds() <= 180
    error = refused(lease, dpop=proof)
    assert (error.status, error.code) == (401, "replay_detected")


def test_the_table_forgets_proofs_whose_window_has_passed(lease, settings):
    settings.REDIS_URL = ""
    DpopReplay.objects.create(jti="long-gone", expires_at=timezone.now() - timezone.timedelta(seconds=1))
    replay._last_sweep = 0.0
    call(lease)
    assert not DpopReplay.objects.filter(jti="long-gone").exists()
    assert DpopReplay.objects.count() == 1


def test_a_refused_proof_does_not_spend_its_jti(lease, settings):
    settings.REDIS_URL = ""
    jti = str(uuid.uuid4())
    refused(lease, claims={"jti": jti, "htm": "GET"})
    assert call(lease, claims={"jti": jti}).proof_jti == jti


def test_with_redis_down_calls_fail_closed(lease, settings):
    settings.REDIS_URL = f"redis://127.0.0.1:{free_port()}/0"
    error = refused(lease)
    assert (error.status, error.code) == (503, "replay_cache_unavailable")


# --- the lease ------------------------------------------------------------------------------------


def _at(monkeypatch, moment: float) -> None:
    monkeypatch.setattr(auth, "time", types.SimpleNamespace(time=lambda: moment))


def test_an_expired_lease_is_lease_expired(lease, monkeypatch):
    later = time.time() + 301
    _at(monkeypatch, later)
    error = refused(lease, claims={"iat": int(later)})
    assert (error.status, error.code) == (401, "lease_expired")


def test_a_cached_lease_expires_too(lease, monkeypatch):
    call(lease)
    later = time.time() + 301
    _at(monkeypatch, later)
    error = refused(lease, claims={"iat": int(later)})
    assert (error.status, error.code) == (401, "lease_expired")


def test_revoke_all_invalidates_outstanding_leases_even_cached_ones(lease, operator):
    call(lease)
    advance_epoch("ops")
    error = refused(lease)
    assert (error.status, error.code) == (401, "invalid_lease")
    assert call(gate_client.lease(operator)).epoch == 1


def test_another_process_revoking_is_seen_within_a_second(lease):
    from governance.models import GateState

    call(lease)
    GateState.objects.filter(pk=1).update(epoch=7)  # as another process would
    time.sleep(1.05)
    assert refused(lease).code == "invalid_lease"


def _forged(lease, claims_change=None, *, kid=None, signer=None):
    header, payload, _ = lease.lease_jwt.split(".")
    header_claims = jws.read_json_segment(header)
    if kid is not None:
        header_claims["kid"] = kid
    claims = {**jws.read_json_segment(payload), **(claims_change or {})}
    signing_input = f"{gate_client.segment(header_claims)}.{gate_client.segment(claims)}"
    return f"{signing_input}.{(signer or make_key()).sign(signing_input.encode())}"


@pytest.mark.parametrize(
    "forge",
    [
        lambda lease: _forged(lease, kid="es256-20200101-deadbeef"),  # an unknown kid
        lambda lease: _forged(lease),  # the real kid, another key
        lambda lease: _resign_with(lease.lease_jwt, claims={"scope": ["tools:call", "admin:all"]}),
        lambda lease: _resign_with(lease.lease_jwt, header={"alg": "none"}),
        lambda lease: lease.lease_jwt + "x",
        lambda lease: "not-a-jwt",
    ],
    ids=["unknown-kid", "wrong-key", "tampered-claims", "alg-none", "bad-signature", "garbage"],
)
def test_a_lease_we_did_not_sign_is_invalid_lease(lease, forge):
    token = forge(lease)
    error = refused(lease, authorization=f"DPoP {token}", dpop=lease.key.proof("POST", PATH, token))
    assert (error.status, error.code) == (401, "invalid_lease")


def _signed_by_us(lease, **changes) -> str:
    """The lease's claims changed and signed again with the real lease key."""
    from governance.gate.signing import sign_jwt

    claims = {**jws.read_json_segment(lease.lease_jwt.split(".")[1]), **changes}
    for name in [name for name, value in claims.items() if value is DROP]:
        del claims[name]
    for name, value in list(claims.items()):
        if isinstance(value, FromNow):
            claims[name] = value.resolve()
    return sign_jwt(claims)[0]


class FromNow:
    """A time claim ``seconds`` from when the lease is signed (not from when the tests were
    collected: the suite may reach a test minutes later)."""

    def __init__(self, seconds: int, as_text: bool = False):
        self.seconds, self.as_text = seconds, as_text

    def resolve(self):
        value = int(time.time()) + self.seconds
        return str(value) if self.as_text else value


@pytest.mark.parametrize(
    ("changes", "accepted"),
    [
        ({}, True),
        ({"nbf": FromNow(3)}, True),  # another host's clock a little behind
        ({"nbf": FromNow(60)}, False),
        ({"aud": "latchgate"}, False),
        ({"iss": "https://elsewhere.example.com"}, False),
        ({"epoch": DROP}, False),
        ({"cnf": {}}, False),
        ({"scope": "tools:call"}, False),
        ({"exp": FromNow(60, as_text=True)}, False),
    ],
)
def test_a_lease_we_signed_must_still_carry_sound_claims(lease, changes, accepted):
    token = _signed_by_us(lease, **changes)
    dpop = lease.key.proof("POST", PATH, token)
    if accepted:
        assert call(lease, authorization=f"DPoP {token}", dpop=dpop).lease_jti == lease.lease_jti
    else:
        error = refused(lease, authorization=f"DPoP {token}", dpop=dpop)
        assert (error.status, error.code) == (401, "invalid_lease")


def test_a_lease_whose_row_is_gone_is_invalid_lease(lease):
    GateLease.objects.filter(lease_jti=lease.lease_jti).delete()
    assert refused(lease).code == "invalid_lease"


def test_a_lease_of_another_deployment_is_invalid_lease(lease, settings):
    settings.PUBLIC_BASE_URL = "https://elsewhere.example.com"
    assert refused(lease).code == "invalid_lease"


# --- through DRF ----------------------------------------------------------------------------------


class _LeaseEcho(APIView):
    authentication_classes = [LeaseAuthentication]

    def post(self, request):
        context = lease_of(request)
        return Response({"agent": context.agent_id, "kind": request.auth.kind})


def _drf(headers: dict):
    request = APIRequestFactory().post(PATH, {}, format="json", **headers)
    response = _LeaseEcho.as_view()(request)
    response.render()
    return response.status_code, json.loads(response.content)


def test_lease_authentication_gives_views_the_lease(lease):
    status, body = _drf(lease.headers("POST", PATH))
    assert status == 200 and body["kind"] == "lease"
    assert body["agent"] == GateLease.objects.get().agent_id


def test_lease_authentication_answers_the_gate_codes(lease):
    assert _drf({}) == (401, {"error": "missing_auth_header"})
    assert _drf({"HTTP_AUTHORIZATION": f"DPoP {lease.lease_jwt}"}) == (401, {"error": "missing_auth_header"})
    bearer = {"HTTP_AUTHORIZATION": f"Bearer {lease.lease_jwt}", "HTTP_DPOP": lease.proof("POST", PATH)}
    assert _drf(bearer)[1]["error"] == "invalid_lease"
    status, body = _drf(lease.headers("POST", PATH, claims={"htm": "GET"}))
    assert status == 401 and body["error"] == "invalid_dpop" and "htm" in body["deny_reason"]
    headers = lease.headers("POST", PATH)
    assert _drf(headers)[0] == 200
    assert _drf(headers) == (401, {"error": "replay_detected"})


def test_gate_errors_render_sanitized_reasons_and_bare_5xx():
    from governance.api.errors import gate_api_error

    rendered = gate_api_error(GateError(401, "invalid_dpop", deny_reason="bad\n\x1b[31mhtm" + "x" * 600))
    assert rendered.status_code == 401 and rendered.error == "invalid_dpop"
    assert rendered.extra["deny_reason"].startswith("bad[31mhtm") and len(rendered.extra["deny_reason"]) == 500
    rendered = gate_api_error(GateError(400, "invalid_request", reason="unknown field x"))
    assert rendered.extra == {"reason": "unknown field x"}
    rendered = gate_api_error(GateError(503, "replay_cache_unavailable", deny_reason="redis at 10.0.0.3 refused"))
    assert (rendered.status_code, rendered.error, rendered.extra) == (503, "replay_cache_unavailable", {})


@pytest.mark.parametrize("path", ["/.well-known/jwks.json", "/healthz"])
def test_dpop_headers_on_unauthenticated_routes_are_ignored(lease, path):
    client = APIClient()
    response = client.get(path, HTTP_AUTHORIZATION=f"DPoP {lease.lease_jwt}", HTTP_DPOP="garbage")
    assert response.status_code == 200


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_one_proof_sent_in_parallel_passes_once(operator, settings):
    """Concurrent replays of one proof against the table: exactly one wins."""
    from concurrent.futures import ThreadPoolExecutor

    settings.REDIS_URL = ""
    lease = gate_client.lease(operator)
    proof = lease.proof("POST", PATH)

    def attempt(_):
        try:
            call(lease, dpop=proof)
            return "ok"
        except GateError as exc:
            return exc.code
        finally:
            connection.close()

    with ThreadPoolExecutor(8) as pool:
        outcomes = list(pool.map(attempt, range(8)))
    assert sorted(outcomes) == ["ok"] + ["replay_detected"] * 7
