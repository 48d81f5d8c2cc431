"""Steps 1–5: who may come in, and with what. Rate limit, drain, lease and DPoP, the action
looked up, and trusted."""

from controlplane.gate.manifests import Trust
from controlplane.gate.registry import registry
from envelopes.gate.steps.call import Call
from governance.errors import GateError
from governance.gate.auth import verify_lease_call
from governance.gate.rate_limit import SettingBucket
from governance.gate.replay import remember_proof, remember_proof_async, remembers_without_blocking
from governance.gate.state import gate_state
from governance.hotpath import InThread, OnLoop

_calls = SettingBucket("MANDATE_GATE_EXECUTE_RATE_PER_SECOND")


def rate_limit() -> None:
    """1. Calls per server process and second (a token bucket); 429 beyond it."""
    if not _calls.take():
        raise GateError(429, "rate_limit_exceeded")


def drain() -> None:
    """2. A draining gate (shared by every process) takes no new calls."""
    if gate_state().draining:
        raise GateError(503, "draining")


def authenticate(call: Call):
    """3. The lease and this call's DPoP proof, bound to POST and PUBLIC_BASE_URL + path
    (the proof is not yet remembered: ``remember``)."""
    headers = call.request.headers
    return verify_lease_call(call.request.method, call.request.path, headers.get("authorization"), headers.get("dpop"))


def remember(call: Call):
    """3, continued. The proof's ``jti`` is used once (``replay_detected``): in Redis from the
    event loop, or in the database from a pool thread on the embedded default."""
    if remembers_without_blocking():
        return OnLoop(remember_proof, remember_proof_async, call.lease.proof_jti)
    return InThread(remember_proof, call.lease.proof_jti)


def look_up(call: Call):
    """4. The action, in the active catalogue."""
    manifest = registry().get(call.action_id)
    if manifest is None:
        raise GateError(404, "action_not_found")
    return manifest


def trust(call: Call) -> None:
    """5. The provider is one the catalogue trusts: a builtin, or a WASM module whose bytes,
    hashed when loaded, equal the manifest's digest."""
    manifest = call.manifest
    if manifest.digest_ok:
        return
    if manifest.trust == Trust.DIGEST_MISMATCH:
        raise GateError(403, "action_digest_mismatch")
    raise GateError(403, "action_not_registered")  # no module, or one that breaks the convention
