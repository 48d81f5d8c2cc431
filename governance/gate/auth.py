"""Who is calling a protected gate endpoint: an agent (a lease and a DPoP proof) or an
operator (an operator key and a DPoP proof). Both take the request's method and path (the
path the application routes, without any script prefix) and its ``Authorization`` and
``DPoP`` header values, so the DRF classes and the hot path share them.

A verified lease is kept in this process until it expires (by the exact token), so a call
costs one proof verification and one replay check; the epoch is re-read through
``gate_state()``'s cache (≤ 1 s) on every call, so revoke-all reaches cached leases too.
"""

import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from governance.errors import GateError
from governance.gate.dpop import DPoPRejected, verify_proof
from governance.gate.leases import Budgets, read_lease
from governance.gate.operator_keys import find_operator_key, is_operator_key
from governance.gate.replay import remember_proof
from governance.gate.state import gate_state
from governance.models import GateLease


@dataclass(frozen=True)
class LeaseContext:
    """The agent behind a protected call."""

    lease_jti: str
    session_id: str
    agent_id: str
    scopes: tuple[str, ...]
    budgets: Budgets | None
    epoch: int
    jkt: str
    expires_at: datetime
    organization_id: str
    identity: str  # who asked for the lease (GateLease.identity)
    proof_jti: str = ""  # this call's DPoP proof


@dataclass(frozen=True)
class OperatorContext:
    name: str
    jkt: str
    key_id: str
    organization_id: str
    proof_jti: str


class _LeaseCache:
    """Verified leases by token until they expire (bounded, oldest dropped first)."""

    def __init__(self, size: int = 20_000):
        self.size = size
        self._entries: OrderedDict[str, tuple[LeaseContext, int]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, token: str):
        return self._entries.get(token)

    def put(self, token: str, context: LeaseContext, exp: int) -> None:
        with self._lock:
            self._entries[token] = (context, exp)
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)

    def drop(self, token: str) -> None:
        with self._lock:
            self._entries.pop(token, None)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


verified_leases = _LeaseCache()


def forget_cached_leases() -> None:
    verified_leases.clear()


def _scheme_token(authorization: str | None) -> tuple[str, str] | None:
    if not authorization or not authorization.strip():
        return None
    scheme, _, token = authorization.strip().partition(" ")
    return scheme.lower(), token.strip()


def _lease(token: str, now: float) -> LeaseContext:
    cached = verified_leases.get(token)
    if cached is not None:
        context, exp = cached
        if exp <= now:
            verified_leases.drop(token)
            raise GateError(401, "lease_expired")
        return context
    claims = read_lease(token, now=now)
    row = GateLease.objects.filter(lease_jti=claims.jti).values("organization_id", "identity").first()
    if row is None:
        raise GateError(401, "invalid_lease", deny_reason="lease is not known to this gate")
    context = LeaseContext(
        lease_jti=claims.jti,
        session_id=claims.session_id,
        agent_id=claims.sub,
        scopes=claims.scopes,
        budgets=claims.budgets,
        epoch=claims.epoch,
        jkt=claims.jkt,
        expires_at=datetime.fromtimestamp(claims.exp, UTC),
        organization_id=str(row["organization_id"]),
        identity=row["identity"],
    )
    verified_leases.put(token, context, claims.exp)
    return context


def authenticate_lease(method: str, path: str, authorization: str | None, dpop: str | None) -> LeaseContext:
    """The lease behind ``Authorization: DPoP <lease>`` + ``DPoP: <proof>``; ``GateError``:
    401 ``missing_auth_header`` (either header missing), ``invalid_lease`` (Bearer or another
    scheme, bad signature or claims, unknown lease, older epoch), ``lease_expired``,
    ``invalid_dpop``, ``replay_detected``; 503 ``replay_cache_unavailable``."""
    context = verify_lease_call(method, path, authorization, dpop)
    remember_proof(context.proof_jti)
    return context


def verify_lease_call(method: str, path: str, authorization: str | None, dpop: str | None) -> LeaseContext:
    """``authenticate_lease`` but for the replay check: the caller must still remember the
    proof (``remember_proof(context.proof_jti)`` or its async twin) before trusting it. No
    I/O but the lease's row on the first call with a token this process has not verified."""
    presented = _scheme_token(authorization)
    if presented is None:
        raise GateError(401, "missing_auth_header")
    scheme, token = presented
    if scheme != "dpop":
        raise GateError(401, "invalid_lease", deny_reason="Authorization must use the DPoP scheme, not " + scheme[:20])
    if not token:
        raise GateError(401, "invalid_lease", deny_reason="empty token")
    if not dpop or not dpop.strip():
        raise GateError(401, "missing_auth_header")
    now = time.time()
    context = _lease(token, now)
    if context.epoch != gate_state().epoch:
        raise GateError(401, "invalid_lease", deny_reason="lease was revoked (older epoch)")
    proof = verify_proof(dpop.strip(), method=method, path=path, token=token, jkt=context.jkt, now=now)
    return replace(context, proof_jti=proof.jti)


def authenticate_operator(method: str, path: str, authorization: str | None, dpop: str | None) -> OperatorContext:
    """The operator behind ``Authorization: DPoP mdo_…`` + ``DPoP: <proof>`` (a proof by the
    key pair the operator key is bound to, ``ath`` = SHA-256 of the key). ``GateError`` 401,
    as LatchGate's admin socket answers: ``missing_auth_header``, ``invalid_auth_scheme``,
    ``invalid_operator_token``, ``missing_dpop_header``, ``key_binding_failed``,
    ``invalid_dpop``, ``replay_detected``; 503 ``replay_cache_unavailable``."""
    presented = _scheme_token(authorization)
    if presented is None:
        raise GateError(401, "missing_auth_header")
    scheme, secret = presented
    if scheme != "dpop":
        raise GateError(401, "invalid_auth_scheme")
    key = find_operator_key(secret) if is_operator_key(secret) else None
    if key is None:
        raise GateError(401, "invalid_operator_token")
    if not dpop or not dpop.strip():
        raise GateError(401, "missing_dpop_header")
    try:
        proof = verify_proof(dpop.strip(), method=method, path=path, token=secret, jkt=key.jkt)
    except DPoPRejected as exc:
        if exc.kind == "bad_key":
            raise GateError(401, "key_binding_failed", deny_reason=exc.deny_reason) from None
        raise
    remember_proof(proof.jti)
    return OperatorContext(
        name=key.name, jkt=key.jkt, key_id=key.key_prefix, organization_id=str(key.organization_id), proof_jti=proof.jti
    )
