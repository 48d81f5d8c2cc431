"""OpenID Connect ID tokens as API credentials (docs/oidc.md): verify_id_token's checks, the
issuers' key sets (caching, rotation, outages) and OIDCAuthentication through DRF."""

import io
import json
import time

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.core.management import CommandError, call_command
from rest_framework.test import APIClient

from governance.choices import Role
from governance.gate import jws
from governance.jwks import MAX_JWKS_BYTES, key_sets
from governance.services.oidc import (
    MAX_TOKEN_CHARS,
    OIDCCode,
    OIDCRejected,
    OIDCUnavailable,
    TrustedIssuer,
    trusted_issuers,
    verify_id_token,
)
from tests.oidc_issuer import AUDIENCE, EMAIL, ISSUER, SUBJECT, b64url, segment, sign

NAN_HEADER = b'{"alg": "RS256", "kid": "rsa-1", "x": NaN}'


def rejection(token: str, **kwargs) -> str:
    with pytest.raises(OIDCRejected) as caught:
        verify_id_token(token, **kwargs)
    return caught.value.code


class FakeClock:
    def __init__(self):
        self.now = time.monotonic()

    def __call__(self):
        return self.now

    def advance(self, seconds: float):
        self.now += seconds


@pytest.fixture
def clock(monkeypatch):
    """The key sets' clock, moved by hand (TTL and refetch intervals without sleeping)."""
    fake = FakeClock()
    monkeypatch.setattr(key_sets, "clock", fake)
    return fake


@pytest.fixture
def served_issuer(oidc_issuer, settings):
    """The test issuer trusted through its JWKS served on 127.0.0.1 (fetched with httpx)."""
    settings.MANDATE_OIDC_ISSUERS = [oidc_issuer.settings_entry(served=True)]
    return oidc_issuer


# --- good tokens ---------------------------------------------------------------------


def test_good_token_gives_the_email_as_principal(oidc_issuer):
    identity = verify_id_token(oidc_issuer.id_token())
    assert identity.principal == EMAIL
    assert (identity.issuer, identity.subject, identity.email) == (ISSUER, SUBJECT, EMAIL)
    assert identity.issuer_name == "test issuer"
    assert identity.claims["aud"] == AUDIENCE
    assert abs(identity.expires_at.timestamp() - (time.time() + 3600)) < 5


def test_email_principal_is_lower_case(oidc_issuer):
    assert verify_id_token(oidc_issuer.id_token(email="Runner@Example.COM")).principal == "runner@example.com"


def test_token_without_email_gives_the_subject_as_principal(oidc_issuer):
    identity = verify_id_token(oidc_issuer.id_token(email=None, sub="service-account-42"))
    assert identity.principal == "service-account-42"
    assert identity.email is None


def test_es256_token_from_the_ec_key_is_accepted(oidc_issuer):
    assert verify_id_token(oidc_issuer.id_token(alg="ES256")).principal == EMAIL


def test_email_verified_as_the_string_true_is_accepted(oidc_issuer):
    assert verify_id_token(oidc_issuer.id_token(email_verified="true")).principal == EMAIL


def test_audience_list_containing_ours_is_accepted(oidc_issuer):
    token = oidc_issuer.id_token(aud=["someone-else", AUDIENCE], azp=AUDIENCE)
    assert verify_id_token(token).principal == EMAIL


def test_single_audience_with_another_azp_is_accepted(oidc_issuer):
    # Google's service-account identity tokens: aud is what was asked for, azp the account.
    assert verify_id_token(oidc_issuer.id_token(azp="117000000000000000000")).principal == EMAIL


def test_clock_skew_within_60_seconds_is_tolerated(oidc_issuer):
    now = time.time()
    assert verify_id_token(oidc_issuer.id_token(exp=now - 30, iat=now - 3600)).principal == EMAIL
    assert verify_id_token(oidc_issuer.id_token(iat=now + 30, nbf=now + 30)).principal == EMAIL


# --- refused tokens --------------------------------------------------------------------


def test_tampered_payload_is_invalid_signature(oidc_issuer):
    header, _, signature = oidc_issuer.id_token().split(".")
    forged = segment({"iss": ISSUER, "aud": AUDIENCE, "sub": "x", "email": "admin@example.com",
                      "iat": int(time.time()), "exp": int(time.time()) + 3600})  # fmt: skip
    assert rejection(f"{header}.{forged}.{signature}") == OIDCCode.INVALID_SIGNATURE


def test_token_signed_by_another_key_is_invalid_signature(oidc_issuer):
    stranger = oidc_issuer.add_key("RSA")
    assert rejection(oidc_issuer.id_token(kid="rsa-1", signed_by=stranger)) == OIDCCode.INVALID_SIGNATURE


def test_es256_token_naming_the_rsa_key_is_invalid_signature(oidc_issuer):
    token = oidc_issuer.id_token(alg="ES256", kid="rsa-1", signed_by="ec-1")
    assert rejection(token) == OIDCCode.INVALID_SIGNATURE


def test_garbled_signature_is_invalid_signature(oidc_issuer):
    header, payload, _ = oidc_issuer.id_token().split(".")
    assert rejection(f"{header}.{payload}.{b64url(b'x' * 256)}") == OIDCCode.INVALID_SIGNATURE
    assert rejection(f"{header}.{payload}.") == OIDCCode.INVALID_SIGNATURE


def test_unknown_kid_is_unknown_key(oidc_issuer):
    unpublished = oidc_issuer.add_key("RSA")
    assert rejection(oidc_issuer.id_token(kid=unpublished)) == OIDCCode.UNKNOWN_KEY


@pytest.mark.parametrize("alg", ["none", "HS256"])
def test_alg_none_and_hs256_are_unsupported_algorithm(oidc_issuer, alg):
    assert rejection(oidc_issuer.id_token(alg=alg)) == OIDCCode.UNSUPPORTED_ALGORITHM


def test_other_asymmetric_algorithms_are_unsupported(oidc_issuer):
    assert rejection(oidc_issuer.id_token(header={"alg": "RS512"})) == OIDCCode.UNSUPPORTED_ALGORITHM
    assert rejection(oidc_issuer.id_token(header={"alg": "PS256"})) == OIDCCode.UNSUPPORTED_ALGORITHM


def test_wrong_issuer_is_untrusted_issuer_and_fetches_nothing(served_issuer):
    token = served_issuer.id_token(iss="https://accounts.google.com")
    assert rejection(token) == OIDCCode.UNTRUSTED_ISSUER
    assert served_issuer.jwks_requests == 0


def test_issuer_must_match_exactly(oidc_issuer):
    assert rejection(oidc_issuer.id_token(iss=ISSUER + "/")) == OIDCCode.UNTRUSTED_ISSUER


def test_no_issuer_trusted_by_default(oidc_issuer, settings):
    settings.MANDATE_OIDC_ISSUERS = []
    assert rejection(oidc_issuer.id_token()) == OIDCCode.UNTRUSTED_ISSUER


def test_wrong_audience_is_invalid_audience(oidc_issuer):
    assert rejection(oidc_issuer.id_token(aud="another-service")) == OIDCCode.INVALID_AUDIENCE
    assert rejection(oidc_issuer.id_token(aud=["a", "b"])) == OIDCCode.INVALID_AUDIENCE


def test_azp_of_another_party_with_several_audiences_is_invalid_audience(oidc_issuer):
    token = oidc_issuer.id_token(aud=[AUDIENCE, "another-service"], azp="another-service")
    assert rejection(token) == OIDCCode.INVALID_AUDIENCE


def test_expired_token_is_token_expired(oidc_issuer):
    now = time.time()
    assert rejection(oidc_issuer.id_token(exp=now - 61, iat=now - 3600)) == OIDCCode.TOKEN_EXPIRED
    # The same good token, verified an hour and a minute later.
    assert rejection(oidc_issuer.id_token(), now=now + 3661) == OIDCCode.TOKEN_EXPIRED


def test_iat_or_nbf_in_the_future_is_token_not_yet_valid(oidc_issuer):
    later = time.time() + 120
    assert rejection(oidc_issuer.id_token(iat=later, exp=later + 3600)) == OIDCCode.TOKEN_NOT_YET_VALID
    assert rejection(oidc_issuer.id_token(nbf=later)) == OIDCCode.TOKEN_NOT_YET_VALID


@pytest.mark.parametrize("verified", [False, "false"])
def test_unverified_email_is_email_not_verified(oidc_issuer, verified):
    assert rejection(oidc_issuer.id_token(email_verified=verified)) == OIDCCode.EMAIL_NOT_VERIFIED


@pytest.mark.parametrize(
    "token",
    [
        "",
        "abc",
        "a.b",
        "a.b.c.d",
        "a.b.c",
        "eyJ!.eyJ.sig",
        f"{segment([1])}.{segment({})}.",
        f"{segment({'alg': 'RS256', 'kid': 'rsa-1'})}.{b64url(b'not json')}.",
        f"{segment({'alg': 'RS256', 'kid': 'rsa-1'})}.{segment('a string')}.",
        f"{b64url(NAN_HEADER)}.{segment({})}.",
    ],
)
def test_malformed_token_is_invalid_token(oidc_issuer, token):
    assert rejection(token) == OIDCCode.INVALID_TOKEN


def test_oversized_token_is_invalid_token(oidc_issuer):
    token = oidc_issuer.id_token(padding="x" * MAX_TOKEN_CHARS)
    assert len(token) > MAX_TOKEN_CHARS
    assert rejection(token) == OIDCCode.INVALID_TOKEN


@pytest.mark.parametrize(
    "claims",
    [
        {"exp": "2099-01-01"},
        {"exp": True},
        {"exp": 1e400},  # JSON's way to say infinity
        {"iat": -5},
        {"sub": ""},
        {"sub": "a\nb"},
        {"email": "not-an-email"},
        {"email": "a@b\n"},
        {"email": 42},
        {"email_verified": "yes"},
        {"aud": 42},
        {"aud": []},
        {"iss": [ISSUER]},
    ],
)
def test_claims_of_the_wrong_type_are_invalid_token(oidc_issuer, claims):
    assert rejection(oidc_issuer.id_token(**claims)) == OIDCCode.INVALID_TOKEN


@pytest.mark.parametrize("claim", ["exp", "iat", "sub", "aud", "iss"])
def test_token_lacking_a_required_claim_is_invalid_token(oidc_issuer, claim):
    header, payload, _ = oidc_issuer.id_token().split(".")
    claims = json.loads(jws.b64url_decode(payload))
    del claims[claim]
    signing_input = f"{header}.{segment(claims)}".encode()
    token = f"{signing_input.decode()}.{b64url(sign(signing_input, oidc_issuer.keys['rsa-1']))}"
    assert rejection(token) == OIDCCode.INVALID_TOKEN


@pytest.mark.parametrize(
    "header",
    [{"kid": None}, {"kid": 7}, {"crit": ["exp"]}, {"typ": "at+jwt"}, {"typ": "dpop+jwt"}],
)
def test_header_without_kid_or_with_crit_or_another_typ_is_invalid_token(oidc_issuer, header):
    assert rejection(oidc_issuer.id_token(header=header)) == OIDCCode.INVALID_TOKEN


# --- the issuers' keys -------------------------------------------------------------------


def test_keys_are_fetched_once_and_reused(served_issuer):
    for _ in range(5):
        verify_id_token(served_issuer.id_token())
    assert served_issuer.jwks_requests == 1


def test_rotated_key_is_picked_up_after_the_refetch_interval(served_issuer, clock):
    verify_id_token(served_issuer.id_token())
    rotated = served_issuer.add_key("RSA")
    served_issuer.publish("rsa-1", "ec-1", rotated)
    token = served_issuer.id_token(kid=rotated)
    # Fetched a moment ago: an unknown kid does not trigger another fetch yet.
    assert rejection(token) == OIDCCode.UNKNOWN_KEY
    assert served_issuer.jwks_requests == 1
    clock.advance(31)
    assert verify_id_token(token).principal == EMAIL
    assert served_issuer.jwks_requests == 2


def test_first_sight_of_an_unknown_kid_refetches_once(served_issuer, clock):
    verify_id_token(served_issuer.id_token())
    clock.advance(31)
    rotated = served_issuer.add_key("EC")
    served_issuer.publish(rotated)  # the old keys are withdrawn
    assert verify_id_token(served_issuer.id_token(alg="ES256", kid=rotated)).principal == EMAIL
    assert served_issuer.jwks_requests == 2
    assert rejection(served_issuer.id_token()) == OIDCCode.UNKNOWN_KEY


def test_a_flood_of_made_up_kids_fetches_at_most_once_per_30_seconds(served_issuer, clock):
    for n in range(50):
        assert rejection(served_issuer.id_token(kid=f"bogus-{n}", signed_by="rsa-1")) == OIDCCode.UNKNOWN_KEY
    assert served_issuer.jwks_requests == 1
    clock.advance(31)
    for n in range(50):
        rejection(served_issuer.id_token(kid=f"bogus-{n}", signed_by="rsa-1"))
    assert served_issuer.jwks_requests == 2


def test_keys_are_refetched_after_ten_minutes(served_issuer, clock):
    verify_id_token(served_issuer.id_token())
    clock.advance(601)
    verify_id_token(served_issuer.id_token())
    assert served_issuer.jwks_requests == 2


def test_unreachable_jwks_is_jwks_unavailable(served_issuer):
    token = served_issuer.id_token()
    served_issuer.close()  # nothing listens on the port any more
    with pytest.raises(OIDCUnavailable) as caught:
        verify_id_token(token)
    assert caught.value.code == OIDCCode.JWKS_UNAVAILABLE
    assert "unreachable" in caught.value.message


def test_jwks_answering_an_error_is_jwks_unavailable(served_issuer):
    served_issuer.jwks_status = 500
    with pytest.raises(OIDCUnavailable) as caught:
        verify_id_token(served_issuer.id_token())
    assert "HTTP 500" in caught.value.message


def test_oversized_jwks_is_jwks_unavailable(oidc_issuer):
    oidc_issuer.jwks_path.write_text('{"keys": [], "pad": "' + "x" * MAX_JWKS_BYTES + '"}')
    with pytest.raises(OIDCUnavailable) as caught:
        verify_id_token(oidc_issuer.id_token())
    assert "larger than" in caught.value.message


@pytest.mark.parametrize("content", ["not json", '{"keys": "no"}', '{"keys": [{"kty": "oct", "kid": "k", "k": "x"}]}'])
def test_jwks_that_is_not_a_usable_key_set_is_jwks_unavailable(oidc_issuer, content):
    oidc_issuer.jwks_path.write_text(content)
    assert rejection(oidc_issuer.id_token()) == OIDCCode.JWKS_UNAVAILABLE


def test_missing_jwks_file_is_jwks_unavailable(oidc_issuer):
    oidc_issuer.jwks_path.unlink()
    assert rejection(oidc_issuer.id_token()) == OIDCCode.JWKS_UNAVAILABLE


def test_a_failed_fetch_is_not_retried_within_30_seconds(served_issuer, clock):
    served_issuer.jwks_status = 503
    for _ in range(5):
        assert rejection(served_issuer.id_token()) == OIDCCode.JWKS_UNAVAILABLE
    assert served_issuer.jwks_requests == 1
    served_issuer.jwks_status = 200
    clock.advance(31)
    assert verify_id_token(served_issuer.id_token()).principal == EMAIL


def test_known_keys_keep_working_while_the_issuer_is_down(served_issuer, clock):
    token = served_issuer.id_token()
    verify_id_token(token)
    served_issuer.jwks_status = 500
    clock.advance(601)
    assert verify_id_token(token).principal == EMAIL  # the refetch failed; the keys stand
    assert served_issuer.jwks_requests == 2
    clock.advance(86400)
    assert rejection(token) == OIDCCode.JWKS_UNAVAILABLE  # but not for more than a day


def test_unusable_members_of_a_jwks_are_skipped(oidc_issuer):
    jwks = oidc_issuer.jwks()
    jwks["keys"] += [
        {"kty": "oct", "kid": "hmac", "k": "c2VjcmV0"},
        {"kty": "RSA", "kid": "enc", "use": "enc", "n": jwks["keys"][0]["n"], "e": "AQAB"},
        {"kty": "RSA", "kid": "small", "n": b64url(b"\xff" * 128), "e": "AQAB"},
        {"kty": "EC", "kid": "private", "crv": "P-256", "x": jwks["keys"][1]["x"], "y": jwks["keys"][1]["y"], "d": "x"},
    ]
    oidc_issuer.jwks_path.write_text(json.dumps(jwks))
    assert verify_id_token(oidc_issuer.id_token()).principal == EMAIL
    for kid in ("hmac", "enc", "small", "private"):
        assert rejection(oidc_issuer.id_token(kid=kid, signed_by="rsa-1")) == OIDCCode.UNKNOWN_KEY


# --- configuration ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ("x", "must be an object"),
        ({"audience": "a", "jwks_file": "/k"}, "issuer"),
        ({"issuer": "i", "jwks_file": "/k"}, "audience"),
        ({"issuer": "i", "audience": [], "jwks_file": "/k"}, "audience"),
        ({"issuer": "i", "audience": "a"}, "exactly one of jwks_url and jwks_file"),
        ({"issuer": "i", "audience": "a", "jwks_file": "/k", "jwks_url": "https://x/k"}, "exactly one"),
        ({"issuer": "i", "audience": "a", "jwks_url": "http://keys.example.com/k"}, "https"),
        ({"issuer": "i", "audience": "a", "jwks_url": "keys.json"}, "absolute URL"),
        ({"issuer": "i", "audience": "a", "jwks_file": "/k", "audiences": "b"}, "unknown keys: audiences"),
    ],
)
def test_bad_issuer_entries_are_refused_with_a_reason(entry, message):
    with pytest.raises(ImproperlyConfigured, match=message):
        TrustedIssuer.parse(entry, 0)


def test_google_entry_parses(settings):
    settings.MANDATE_OIDC_ISSUERS = [
        {
            "name": "google",
            "issuer": "https://accounts.google.com",
            "audience": "https://mandate.example.com",
            "jwks_url": "https://www.googleapis.com/oauth2/v3/certs",
        }
    ]
    google = trusted_issuers()["https://accounts.google.com"]
    assert google.audiences == ("https://mandate.example.com",)
    assert google.keys.url == "https://www.googleapis.com/oauth2/v3/certs"


def test_same_issuer_twice_is_refused(settings):
    entry = {"issuer": "i", "audience": "a", "jwks_file": "/k"}
    settings.MANDATE_OIDC_ISSUERS = [entry, entry]
    with pytest.raises(ImproperlyConfigured, match="listed twice"):
        trusted_issuers()


# --- through DRF -------------------------------------------------------------------------

probe = pytest.mark.urls("tests.probe_urls")


def bearer(token: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    return client


@probe
@pytest.mark.django_db
def test_view_listing_the_authenticator_takes_a_good_token(oidc_issuer):
    response = bearer(oidc_issuer.id_token()).get("/v1/probe/oidc")
    assert response.status_code == 200
    assert response.json() == {"principal": EMAIL, "kind": "oidc", "issuer": ISSUER, "subject": SUBJECT}


@probe
@pytest.mark.django_db
def test_refused_token_is_401_with_its_code_and_a_challenge(oidc_issuer):
    response = bearer(oidc_issuer.id_token(exp=time.time() - 3600, iat=time.time() - 7200)).get("/v1/probe/oidc")
    assert response.status_code == 401
    assert response.json() == {"error": "token_expired", "reason": "token expired"}
    assert response["WWW-Authenticate"] == 'Bearer realm="mandate"'
    response = bearer(oidc_issuer.id_token(alg="none")).get("/v1/probe/oidc")
    assert (response.status_code, response.json()["error"]) == (401, "unsupported_algorithm")


@probe
@pytest.mark.django_db
def test_unreachable_issuer_keys_are_503_with_retry_after(served_issuer):
    token = served_issuer.id_token()
    served_issuer.close()
    response = bearer(token).get("/v1/probe/oidc")
    assert response.status_code == 503
    assert response.json()["error"] == "jwks_unavailable"
    assert response["Retry-After"] == "30"


@probe
@pytest.mark.django_db
def test_mandate_tokens_still_work_beside_it(oidc_issuer, make_token):
    response = bearer(make_token(Role.PLATFORM_VIEWER)).get("/v1/probe/oidc")
    assert (response.status_code, response.json()["kind"]) == (200, "token")
    assert bearer("mdt_000000000000_wrong").get("/v1/probe/oidc").status_code == 401


@probe
@pytest.mark.django_db
def test_bearer_values_that_are_not_jwts_are_left_to_others(oidc_issuer):
    response = bearer("just-some-opaque-value").get("/v1/probe/oidc")
    assert response.status_code == 401
    assert response.json() == {"error": "unauthenticated"}


@probe
@pytest.mark.django_db
def test_views_on_the_default_authenticators_do_not_take_id_tokens(oidc_issuer):
    # OIDCAuthentication is not a default class: a trusted ID token opens no existing view.
    response = bearer(oidc_issuer.id_token()).get("/v1/probe/echo")
    assert response.status_code == 401
    assert response.json() == {"error": "unauthenticated"}


def test_check_id_token_command_prints_the_identity_or_the_refusal(oidc_issuer):
    out = io.StringIO()
    call_command("check_id_token", oidc_issuer.id_token(), stdout=out)
    assert json.loads(out.getvalue())["principal"] == EMAIL
    with pytest.raises(CommandError, match="^invalid_audience: "):
        call_command("check_id_token", oidc_issuer.id_token(aud="elsewhere"))
