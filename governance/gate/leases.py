"""Leases: short-lived ES256 JWTs bound to an agent's DPoP key (``cnf.jkt``) and to the
revocation epoch, issued by ``POST /v1/leases`` and read back on every protected call.

Who may have which scopes (docs/gate.md, "Who gets a lease"):
- an agent channel's key (``Bearer mdc_…``): a lease for that channel's agent only, with
  ``tools:call`` and custom ``namespace:name`` scopes; the operator scopes (``audit:read``
  and the ``admin:`` namespace) are dropped;
- a person (bearer token or session) or an operator key holding ``platform.operator`` (or
  ``platform.admin``): any scope, for any agent id (default: their own name);
- anyone else presenting a credential: 403 ``identity_forbidden``;
- no credential: 401 ``identity_unauthenticated``, unless ``MANDATE_GATE_OPEN_LEASES`` is on
  (development): then any scope, agent id as asked (default ``anonymous``).
Requested scopes are intersected with the allowed ones; none left is 403 ``scope_not_permitted``.
"""

import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime

from django.conf import settings
from django.db import transaction

from governance.choices import Role
from governance.errors import GateError
from governance.gate import jws
from governance.gate.ids import new_id
from governance.gate.rate_limit import SettingBucket
from governance.gate.signals import lease_issued
from governance.gate.signing import sign_jwt, verify_signature
from governance.gate.state import gate_state
from governance.models import GateLease
from governance.services.people import default_organization

AUDIENCE = "mandate-gate"
MAX_TTL_SECONDS = 3600
# A lease is valid from its nbf; another host's clock may run this far behind the issuer's.
NBF_LEEWAY_SECONDS = 5
BUILTIN_SCOPES = frozenset({"tools:call", "audit:read"})
OPERATOR_SCOPES = frozenset({"audit:read"})
OPERATOR_NAMESPACES = ("admin:",)
MAX_SCOPES = 32
MAX_BUDGET = 2**53 - 1
AGENT_ID = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9._:@-]{0,255}$")
# LatchGate's custom scope format: namespace:name, [a-z0-9:_-], 4-64 characters, starting
# with a letter, not ending with ':'.
CUSTOM_SCOPE = re.compile(r"^(?=.{4,64}$)[a-z][a-z0-9_-]*:[a-z0-9:_-]*[a-z0-9_-]$")
DPOP_JWK_MEMBERS = frozenset({"kty", "crv", "x", "y", "alg", "use", "kid", "key_ops", "ext"})
BUDGET_FIELDS = ("max_calls", "max_cost_usd_cents")

issuance_limit = SettingBucket("MANDATE_GATE_LEASE_RATE_PER_SECOND")


def invalid(reason: str) -> GateError:
    return GateError(400, "invalid_request", reason=reason)


@dataclass(frozen=True)
class Budgets:
    """A lease's budgets: each dimension optional (absent: unconstrained)."""

    max_calls: int | None = None
    max_cost_usd_cents: int | None = None

    @classmethod
    def parse(cls, value) -> "Budgets | None":
        if value is None:
            return None
        if not isinstance(value, dict):
            raise invalid("budgets must be an object")
        unknown = sorted(set(value) - set(BUDGET_FIELDS))
        if unknown:
            raise invalid(f"budgets: unknown field {unknown[0]}")
        for name in BUDGET_FIELDS:
            number = value.get(name)
            if number is not None and (
                isinstance(number, bool) or not isinstance(number, int) or not 0 <= number <= MAX_BUDGET
            ):
                raise invalid(f"budgets.{name} must be an integer from 0 to {MAX_BUDGET}")
        return cls(max_calls=value.get("max_calls"), max_cost_usd_cents=value.get("max_cost_usd_cents"))

    def as_claim(self) -> dict:
        return {name: getattr(self, name) for name in BUDGET_FIELDS if getattr(self, name) is not None}


@dataclass(frozen=True)
class LeaseIdentity:
    """Who asks for a lease, as the API edge authenticated them.

    ``kind``: ``token``, ``person`` (a session), ``operator`` (an operator key), ``channel``
    or ``open`` (no credential). ``agent_id`` is set for a channel (its agent: a channel may
    only lease for it); ``name`` is the default agent id of the others."""

    kind: str
    id: str = ""
    organization_id: str | None = None
    roles: frozenset = frozenset()
    agent_id: str | None = None
    name: str = ""

    @property
    def label(self) -> str:
        return "open" if self.kind == "open" else f"{self.kind}:{self.id}"

    @property
    def is_operator(self) -> bool:
        return Role.PLATFORM_OPERATOR in self.roles or Role.PLATFORM_ADMIN in self.roles

    def check(self) -> None:
        if self.kind == "open":
            if not settings.MANDATE_GATE_OPEN_LEASES:
                raise GateError(401, "identity_unauthenticated")
        elif self.kind != "channel" and not self.is_operator:
            raise GateError(403, "identity_forbidden")

    def subject(self, asked: str | None) -> str:
        """The lease's ``sub``: the agent it is for."""
        if asked is not None and (not isinstance(asked, str) or not AGENT_ID.match(asked)):
            raise invalid("agent_id must be 1-256 characters: letters, digits and . _ : @ -, starting alphanumeric")
        if self.kind == "channel":
            if asked is not None and asked != self.agent_id:
                raise GateError(403, "identity_forbidden")
            return self.agent_id
        return asked or self.name or "anonymous"

    def allows(self, scope: str) -> bool:
        if self.kind == "channel":
            return scope not in OPERATOR_SCOPES and not scope.startswith(OPERATOR_NAMESPACES)
        return True


@dataclass(frozen=True)
class IssuedLease:
    lease_jwt: str
    session_id: str
    lease_jti: str
    expires_at: str  # RFC 3339, whole seconds, "Z" (Python's datetime.fromisoformat reads it)
    lease: GateLease


def _scopes(scopes) -> list[str]:
    if not isinstance(scopes, list) or not scopes:
        raise invalid("scopes must be a non-empty list")
    if len(scopes) > MAX_SCOPES:
        raise invalid(f"at most {MAX_SCOPES} scopes")
    for scope in scopes:
        if not isinstance(scope, str) or (scope not in BUILTIN_SCOPES and not CUSTOM_SCOPE.match(scope)):
            raise invalid("each scope must be tools:call, audit:read, or namespace:name ([a-z0-9:_-], 4-64 characters)")
    return list(dict.fromkeys(scopes))


def _dpop_jwk(jwk) -> str:
    """The thumbprint (``cnf.jkt``) of a valid EC P-256 public JWK."""
    if not isinstance(jwk, dict):
        raise invalid("dpop_jwk must be an EC P-256 public JWK")
    unknown = sorted(set(jwk) - DPOP_JWK_MEMBERS - {"d"})
    if unknown:
        raise invalid(f"dpop_jwk: unknown member {unknown[0]}")
    try:
        jws.p256_public_key(jwk)
    except ValueError as exc:
        raise invalid(f"dpop_jwk: {exc}") from None
    return jws.thumbprint(jwk)


def ttl_seconds() -> int:
    return max(1, min(int(settings.MANDATE_GATE_LEASE_TTL_SECONDS), MAX_TTL_SECONDS))


def issue_lease(*, scopes, dpop_jwk, budgets=None, agent_id=None, identity: LeaseIdentity) -> IssuedLease:
    """A lease for ``identity``'s agent, bound to ``dpop_jwk``. In LatchGate's order: rate
    limit (429), drain (503), identity (401/403), then the request (400)."""
    if not issuance_limit.take():
        raise GateError(429, "rate_limit_exceeded")
    state = gate_state(max_age=0)  # a fresh epoch: a lease of an epoch just revoked is useless
    if state.draining:
        raise GateError(503, "draining")
    identity.check()
    requested = _scopes(scopes)
    jkt = _dpop_jwk(dpop_jwk)
    limits = Budgets.parse(budgets)
    sub = identity.subject(agent_id)
    granted = [scope for scope in requested if identity.allows(scope)]
    if not granted:
        raise GateError(403, "scope_not_permitted")

    now = int(time.time())
    exp = now + ttl_seconds()
    lease_jti, session_id = new_id("lea"), new_id("ses")
    claims = {
        "iss": settings.PUBLIC_BASE_URL,
        "sub": sub,
        "aud": AUDIENCE,
        "exp": exp,
        "nbf": now,
        "iat": now,
        "jti": lease_jti,
        "session_id": session_id,
        "scope": granted,
        "cnf": {"jkt": jkt},
        "epoch": state.epoch,
    }
    if limits is not None:
        claims["budgets"] = limits.as_claim()
    with transaction.atomic():
        token, kid = sign_jwt(claims)
        lease = GateLease.objects.create(
            lease_jti=lease_jti,
            session_id=session_id,
            agent_id=sub,
            identity=identity.label,
            organization_id=identity.organization_id or default_organization().pk,
            scopes=granted,
            budgets=claims.get("budgets"),
            jkt=jkt,
            epoch=state.epoch,
            kid=kid,
            issued_at=datetime.fromtimestamp(now, UTC),
            expires_at=datetime.fromtimestamp(exp, UTC),
        )
        lease_issued.send(sender=GateLease, lease=lease)
    return IssuedLease(
        lease_jwt=token,
        session_id=session_id,
        lease_jti=lease_jti,
        expires_at=datetime.fromtimestamp(exp, UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        lease=lease,
    )


@dataclass(frozen=True)
class LeaseClaims:
    """A lease JWT whose signature verified, with the claims the gate reads."""

    jti: str
    session_id: str
    sub: str
    scopes: tuple[str, ...]
    budgets: Budgets | None
    jkt: str
    epoch: int
    nbf: int
    exp: int


def _invalid_lease(reason: str) -> GateError:
    return GateError(401, "invalid_lease", deny_reason=reason)


def read_lease(token: str, *, now: float | None = None) -> LeaseClaims:
    """Verify a lease JWT's signature (by its ``kid``, retired keys included) and claims.
    401 ``lease_expired`` or ``invalid_lease``; the epoch and the lease's row are the
    caller's to check."""
    try:
        header_b64, payload_b64, signature_b64 = jws.split_compact(token)
        header = jws.read_json_segment(header_b64)
        signature = jws.b64url_decode(signature_b64)
    except ValueError as exc:
        raise _invalid_lease(f"malformed lease: {exc}") from None
    kid = header.get("kid")
    if header.get("alg") != "ES256" or not isinstance(kid, str) or not kid:
        raise _invalid_lease("lease header must name alg ES256 and a kid")
    if not verify_signature(kid, f"{header_b64}.{payload_b64}".encode("ascii"), signature):
        raise _invalid_lease("lease signature does not verify (unknown kid or altered lease)")
    try:
        claims = jws.read_json_segment(payload_b64)
        parsed = LeaseClaims(
            jti=_text(claims, "jti"),
            session_id=_text(claims, "session_id"),
            sub=_text(claims, "sub"),
            scopes=tuple(_strings(claims.get("scope"))),
            budgets=Budgets.parse(claims.get("budgets")),
            jkt=_text(claims.get("cnf") if isinstance(claims.get("cnf"), dict) else {}, "jkt"),
            epoch=_integer(claims, "epoch"),
            nbf=_integer(claims, "nbf"),
            exp=_integer(claims, "exp"),
        )
        _integer(claims, "iat")
    except (ValueError, GateError):
        raise _invalid_lease("lease claims are incomplete") from None
    if claims.get("iss") != settings.PUBLIC_BASE_URL or claims.get("aud") != AUDIENCE:
        raise _invalid_lease("lease was not issued for this gate (iss/aud)")
    now = time.time() if now is None else now
    if parsed.exp <= now:
        raise GateError(401, "lease_expired")
    if parsed.nbf > now + NBF_LEEWAY_SECONDS:
        raise _invalid_lease("lease not yet valid (nbf)")
    return parsed


def _text(claims: dict, name: str) -> str:
    value = claims.get(name)
    if not isinstance(value, str) or not value:
        raise ValueError(name)
    return value


def _integer(claims: dict, name: str) -> int:
    value = claims.get(name)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(name)
    return value


def _strings(value) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise ValueError("scope")
    return value
