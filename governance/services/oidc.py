"""OpenID Connect ID tokens as API credentials (GBX's jobs send ``Bearer <Google ID token>``).

``verify_id_token`` checks a token against the issuers trusted by ``MANDATE_OIDC_ISSUERS``
(shape and size, RS256/ES256 only, ``kid`` in the issuer's JWKS, signature, ``iss``, ``aud``
and ``azp``, ``exp``/``iat``/``nbf`` with 60 s leeway, ``email_verified``) and returns who
the caller is, or raises ``OIDCRejected`` with a code. Every token is verified in full on
every call; only the issuers' keys are cached (``governance.jwks``). docs/oidc.md.
"""

import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from types import MappingProxyType
from typing import NoReturn
from urllib.parse import urlsplit

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from governance.control_characters import has_control_characters
from governance.errors import DomainError
from governance.gate import jws
from governance.jwks import KeySetUnavailable, KeySource, key_sets

ALGORITHMS = frozenset({"RS256", "ES256"})
LEEWAY_SECONDS = 60
MAX_TOKEN_CHARS = 16 * 1024
MAX_AUDIENCES = 32
MAX_SUBJECT_CHARS = 255
MAX_EMAIL_CHARS = 320
LATEST_TIMESTAMP = 253402300799  # 9999-12-31T23:59:59Z: what ``datetime`` can hold
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "::1", "localhost"})
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\Z")


class OIDCCode(StrEnum):
    """Why a token was refused (the API edges answer it as the error code)."""

    INVALID_TOKEN = "invalid_token"  # not a well-formed ID token: shape, size, JSON, claim types
    UNSUPPORTED_ALGORITHM = "unsupported_algorithm"  # alg other than RS256/ES256 (none, HS256...)
    UNTRUSTED_ISSUER = "untrusted_issuer"  # iss is not a configured issuer
    UNKNOWN_KEY = "unknown_key"  # kid not in the issuer's key set (after one refetch)
    INVALID_SIGNATURE = "invalid_signature"
    INVALID_AUDIENCE = "invalid_audience"  # aud lacks our audience, or azp names another party
    TOKEN_EXPIRED = "token_expired"
    TOKEN_NOT_YET_VALID = "token_not_yet_valid"  # iat or nbf in the future
    EMAIL_NOT_VERIFIED = "email_not_verified"
    JWKS_UNAVAILABLE = "jwks_unavailable"  # the issuer's keys cannot be had now: retry later


class OIDCRejected(DomainError):
    """An ID token refused. ``code`` is an ``OIDCCode``; ``message`` says why, for people, and
    never repeats the token's own values."""

    def __init__(self, code: OIDCCode, message: str):
        super().__init__(message)
        self.code = code


class OIDCUnavailable(OIDCRejected):
    """The issuer's keys are unreachable (and none recent enough are cached): the token may be
    good, the caller may retry (an edge answers 503, not 401)."""

    def __init__(self, message: str):
        super().__init__(OIDCCode.JWKS_UNAVAILABLE, message)


@dataclass(frozen=True)
class TrustedIssuer:
    """One entry of ``MANDATE_OIDC_ISSUERS``."""

    issuer: str
    audiences: tuple[str, ...]
    keys: KeySource
    name: str
    organization: str | None = None  # the slug of the organization its callers act in (None: the default)

    @classmethod
    def parse(cls, entry, index: int) -> "TrustedIssuer":
        where = f"MANDATE_OIDC_ISSUERS[{index}]"
        if not isinstance(entry, dict):
            raise ImproperlyConfigured(f"{where} must be an object")
        unknown = set(entry) - {"issuer", "audience", "jwks_url", "jwks_file", "name", "organization"}
        if unknown:
            raise ImproperlyConfigured(f"{where} has unknown keys: {', '.join(sorted(unknown))}")
        issuer = entry.get("issuer")
        if not isinstance(issuer, str) or not issuer:
            raise ImproperlyConfigured(f"{where}.issuer must be a non-empty string")
        audience = entry.get("audience")
        audiences = (audience,) if isinstance(audience, str) else audience
        if (
            not isinstance(audiences, list | tuple)
            or not audiences
            or not all(isinstance(a, str) and a for a in audiences)
        ):
            raise ImproperlyConfigured(f"{where}.audience must be a non-empty string or list of strings")
        url, file = entry.get("jwks_url"), entry.get("jwks_file")
        if (url is None) == (file is None):
            raise ImproperlyConfigured(f"{where} needs exactly one of jwks_url and jwks_file")
        if url is not None:
            parts = urlsplit(url) if isinstance(url, str) else None
            if parts is None or not parts.hostname:
                raise ImproperlyConfigured(f"{where}.jwks_url must be an absolute URL")
            if parts.scheme != "https" and not (parts.scheme == "http" and parts.hostname in LOOPBACK_HOSTS):
                raise ImproperlyConfigured(f"{where}.jwks_url must be https (http only on loopback)")
        elif not isinstance(file, str) or not file:
            raise ImproperlyConfigured(f"{where}.jwks_file must be a path")
        name = entry.get("name", issuer)
        if not isinstance(name, str) or not name:
            raise ImproperlyConfigured(f"{where}.name must be a non-empty string")
        organization = entry.get("organization")
        if organization is not None and (not isinstance(organization, str) or not organization):
            raise ImproperlyConfigured(f"{where}.organization must be an organization's slug")
        return cls(
            issuer=issuer,
            audiences=tuple(audiences),
            keys=KeySource(url=url, file=file),
            name=name,
            organization=organization,
        )


_parsed: tuple[str, dict[str, TrustedIssuer]] | None = None


def trusted_issuers() -> dict[str, TrustedIssuer]:
    """``MANDATE_OIDC_ISSUERS`` by issuer; ``ImproperlyConfigured`` for a bad entry (checked at
    start-up by ``GovernanceConfig.ready``). Parsed again only when the setting changes."""
    global _parsed
    raw = getattr(settings, "MANDATE_OIDC_ISSUERS", [])
    if not isinstance(raw, list):
        raise ImproperlyConfigured("MANDATE_OIDC_ISSUERS must be a JSON list")
    fingerprint = json.dumps(raw, sort_keys=True, default=str)
    if _parsed is None or _parsed[0] != fingerprint:
        issuers = {}
        for index, entry in enumerate(raw):
            trusted = TrustedIssuer.parse(entry, index)
            if trusted.issuer in issuers:
                raise ImproperlyConfigured(f"MANDATE_OIDC_ISSUERS[{index}]: issuer listed twice")
            issuers[trusted.issuer] = trusted
        _parsed = (fingerprint, issuers)
    return _parsed[1]


@dataclass(frozen=True)
class OIDCIdentity:
    """Who a verified ID token says the caller is."""

    principal: str  # the email (lower case) when the token has one, else ``sub``
    issuer: str  # ``iss``, exactly as configured
    issuer_name: str  # the configured ``name`` (the issuer when unnamed)
    subject: str  # ``sub``
    email: str | None  # lower case
    expires_at: datetime
    claims: MappingProxyType  # every claim, read-only


def canonical_email(email: str) -> str:
    """The form emails are principals in: lower case (Google's ID tokens already are). Whoever
    names an email principal elsewhere (entitlement issuance) compares in this form."""
    return email.strip().lower()


def looks_like_jwt(value: str) -> bool:
    """Whether a bearer value is for this module: a compact JWS has exactly two dots (Mandate's
    own secrets, ``mdt_``/``mdc_``..., have none). Its segments are checked by ``verify_id_token``."""
    return value.count(".") == 2


def _refuse(code: OIDCCode, message: str) -> NoReturn:
    raise OIDCRejected(code, message)


def _read(token: str) -> tuple[dict, dict, bytes, bytes]:
    if not isinstance(token, str) or not token:
        _refuse(OIDCCode.INVALID_TOKEN, "no token")
    if len(token) > MAX_TOKEN_CHARS:
        _refuse(OIDCCode.INVALID_TOKEN, f"token longer than {MAX_TOKEN_CHARS} characters")
    try:
        header_b64, payload_b64, signature_b64 = jws.split_compact(token)
        header = jws.read_json_segment(header_b64)
        payload = jws.read_json_segment(payload_b64)
        signature = jws.b64url_decode(signature_b64)
    except ValueError as exc:
        raise OIDCRejected(OIDCCode.INVALID_TOKEN, f"not a compact JWS: {exc}") from None
    return header, payload, f"{header_b64}.{payload_b64}".encode("ascii"), signature


def _check_header(header: dict) -> tuple[str, str]:
    alg = header.get("alg")
    if alg not in ALGORITHMS:
        _refuse(OIDCCode.UNSUPPORTED_ALGORITHM, "alg must be RS256 or ES256")
    if "crit" in header:
        _refuse(OIDCCode.INVALID_TOKEN, "critical header extensions are not supported")
    typ = header.get("typ", "JWT")
    if not isinstance(typ, str) or typ.upper() != "JWT":
        _refuse(OIDCCode.INVALID_TOKEN, "typ must be JWT (an ID token)")
    kid = header.get("kid")
    if not isinstance(kid, str) or not kid:
        _refuse(OIDCCode.INVALID_TOKEN, "header has no kid")
    return alg, kid


def _trusted_issuer(payload: dict) -> TrustedIssuer:
    iss = payload.get("iss")
    if not isinstance(iss, str):
        _refuse(OIDCCode.INVALID_TOKEN, "iss must be a string")
    trusted = trusted_issuers().get(iss)
    if trusted is None:
        _refuse(OIDCCode.UNTRUSTED_ISSUER, "iss is not a trusted issuer")
    return trusted


def _check_signature(trusted: TrustedIssuer, alg: str, kid: str, signing_input: bytes, signature: bytes) -> None:
    try:
        key = key_sets.signing_key(trusted.keys, kid)
    except KeySetUnavailable as exc:
        raise OIDCUnavailable(f"the signing keys of {trusted.name} are unavailable: {exc}") from None
    if key is None:
        _refuse(OIDCCode.UNKNOWN_KEY, f"kid is not among the signing keys of {trusted.name}")
    if key.alg != alg:
        _refuse(OIDCCode.INVALID_SIGNATURE, f"the key named by kid is for {key.alg}, not {alg}")
    verify = jws.rs256_verify if alg == "RS256" else jws.es256_verify
    if not verify(key.public_key, signing_input, signature):
        _refuse(OIDCCode.INVALID_SIGNATURE, "signature does not verify")


def _check_audience(trusted: TrustedIssuer, payload: dict) -> None:
    aud = payload.get("aud")
    audiences = [aud] if isinstance(aud, str) else aud
    if (
        not isinstance(audiences, list)
        or not 0 < len(audiences) <= MAX_AUDIENCES
        or not all(isinstance(a, str) for a in audiences)
    ):
        _refuse(OIDCCode.INVALID_TOKEN, "aud must be a string or a list of strings")
    ours = next((a for a in trusted.audiences if a in audiences), None)
    if ours is None:
        _refuse(OIDCCode.INVALID_AUDIENCE, "aud does not name this service")
    # OIDC Core 3.1.3.7: a token for several audiences was requested by its azp.
    if len(audiences) > 1 and "azp" in payload and payload["azp"] != ours:
        _refuse(OIDCCode.INVALID_AUDIENCE, "azp is not this service (a token for several audiences)")


def _timestamp(payload: dict, name: str, *, required: bool) -> float | None:
    value = payload.get(name)
    if value is None and not required:
        return None
    # NaN and infinities (JSON's 1e400) fail the range check too.
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= LATEST_TIMESTAMP:
        _refuse(OIDCCode.INVALID_TOKEN, f"{name} must be a NumericDate")
    return value


def _check_times(payload: dict, now: float) -> float:
    exp = _timestamp(payload, "exp", required=True)
    iat = _timestamp(payload, "iat", required=True)
    nbf = _timestamp(payload, "nbf", required=False)
    if now >= exp + LEEWAY_SECONDS:
        _refuse(OIDCCode.TOKEN_EXPIRED, "token expired")
    if iat > now + LEEWAY_SECONDS:
        _refuse(OIDCCode.TOKEN_NOT_YET_VALID, "iat is in the future")
    if nbf is not None and nbf > now + LEEWAY_SECONDS:
        _refuse(OIDCCode.TOKEN_NOT_YET_VALID, "nbf is in the future")
    return exp


def _subject(payload: dict) -> str:
    sub = payload.get("sub")
    if not isinstance(sub, str) or not 0 < len(sub) <= MAX_SUBJECT_CHARS or has_control_characters(sub):
        _refuse(OIDCCode.INVALID_TOKEN, f"sub must be 1 to {MAX_SUBJECT_CHARS} printable characters")
    return sub


def _email(payload: dict) -> str | None:
    email = payload.get("email")
    if email is None:
        return None
    if (
        not isinstance(email, str)
        or len(email) > MAX_EMAIL_CHARS
        or not _EMAIL.match(email)
        or has_control_characters(email)
    ):
        _refuse(OIDCCode.INVALID_TOKEN, "email must be an email address")
    # Absent counts as verified (the issuer is trusted to vouch for what it sends); some
    # issuers send the boolean as a string.
    verified = payload.get("email_verified", True)
    if verified is False or verified == "false":
        _refuse(OIDCCode.EMAIL_NOT_VERIFIED, "the issuer has not verified the email")
    if verified is not True and verified != "true":
        _refuse(OIDCCode.INVALID_TOKEN, "email_verified must be a boolean")
    return canonical_email(email)


def verify_id_token(token: str, *, now: float | None = None) -> OIDCIdentity:
    """The identity an ID token from a trusted issuer asserts; ``OIDCRejected`` (``OIDCUnavailable``
    when the issuer's keys cannot be had) naming the first check the token fails."""
    header, payload, signing_input, signature = _read(token)
    alg, kid = _check_header(header)
    trusted = _trusted_issuer(payload)  # before any fetch: only configured issuers are ever asked
    _check_signature(trusted, alg, kid, signing_input, signature)
    _check_audience(trusted, payload)
    exp = _check_times(payload, datetime.now(UTC).timestamp() if now is None else now)
    subject, email = _subject(payload), _email(payload)
    return OIDCIdentity(
        principal=email or subject,
        issuer=trusted.issuer,
        issuer_name=trusted.name,
        subject=subject,
        email=email,
        expires_at=datetime.fromtimestamp(exp, tz=UTC),
        claims=MappingProxyType(payload),
    )
