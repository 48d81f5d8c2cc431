"""Steps 8–15: the budget, the policy, holding for a person, the debit, the grant, the
provider, and what came back (response schema, verifier)."""

import json
import os

from django.conf import settings
from django.utils import timezone

from controlplane.gate.policy import PolicyInput, decide_policy
from controlplane.gate.registry import registry
from envelopes.gate import budgets
from envelopes.gate.providers import ProviderContext
from envelopes.gate.providers import dispatch as run_provider
from envelopes.gate.providers import dispatch_async as run_provider_async
from envelopes.gate.providers import on_loop as providers_on_loop
from envelopes.gate.providers import verify as run_verifier
from envelopes.gate.steps.call import Call
from evidence.choices import KeyAlgorithm
from evidence.services.keys import active_signer
from governance.errors import GateError
from governance.gate.ids import new_id
from governance.hotpath import InThread, OnLoop


def budget_snapshot(call: Call):
    """8. The session's counters, opened when its lease was issued (``budget_session_not_found``
    when its lease has budgets but the session has no counters)."""
    return budgets.snapshot(call.lease.session_id, _budgets(call.lease))


def policy(call: Call):
    """9. The Rego policy's verdict on this call: allow, deny (403 policy_denied) or hold."""
    remaining = None
    if call.budget is not None and call.budget.max_calls is not None:
        remaining = call.budget.max_calls - call.budget.calls_used
    decision = decide_policy(
        PolicyInput(
            principal=call.lease.agent_id,
            action_id=call.action_id,
            scopes=tuple(call.lease.scopes),
            calls_remaining=remaining,
            sensitive_path=call.sensitive_path,
            denied_paths=call.denied_paths,
            unresolved_paths=call.unresolved_paths,
            unresolved_domains=call.unresolved_domains,
            manifest=call.manifest,
        )
    )
    if decision.denied:
        if decision.deny_reason and "budget" in decision.deny_reason.lower():
            raise GateError(403, "budget_exhausted")
        raise GateError(403, "policy_denied", deny_reason=decision.deny_reason or "denied by policy")
    return decision


def hold(call: Call):
    """10. A person decides: the call becomes a held action in the inbox; 202."""
    from envelopes.gate.approvals import hold_call  # the held action's envelope and evidence

    approval = hold_call(call)
    return 202, {
        "decision": "pending_approval",
        "approval_id": approval.approval_id,
        "request_hash": call.request_hash,
        "trace_id": call.trace_id,
    }


def debit(call: Call) -> None:
    """11. One call off the session's budget, atomically (``budget_exhausted``)."""
    call.debited = budgets.debit(call.lease.session_id, _budgets(call.lease))


def give_back(call: Call) -> None:
    """What ``debit`` took, when nothing was dispatched."""
    if call.debited:
        budgets.credit(call.lease.session_id)
        call.debited = False


def grant(call: Call) -> None:
    """12. The execution grant: what may run, for whom, under which epoch; signed (Ed25519, the
    receipt key) so the ledger event carries a grant anyone can check with the public keys."""
    call.grant_id = new_id("grant")
    document = {
        "grant_id": call.grant_id,
        "trace_id": call.trace_id,
        "action_id": call.action_id,
        "session_id": call.lease.session_id,
        "agent_id": call.lease.agent_id,
        "plan_hash": call.digest_of_plan(),
        "request_hash": call.request_hash,
        "epoch": call.lease.epoch,
    }
    if call.approval is not None:
        document["approval_id"] = call.approval.approval_id
        document["approved_by"] = call.approval.decided_by
        document["operator_binding"] = call.approval.operator_binding
    kid, private = active_signer(KeyAlgorithm.ED25519)
    signed = private.sign(json.dumps(document, sort_keys=True, separators=(",", ":")).encode())
    call.grant_signature = f"{kid}:{signed.hex()}"


def dispatch(call: Call):
    """13. The provider runs the plan, blocking. A failed action is a result, not an
    exception; 502 comes after its receipt is recorded."""
    call.dispatched_at = timezone.now()
    result = run_provider(call.plan, call.body, _context(call))
    call.finished_at = timezone.now()
    return result


async def dispatch_on_loop(call: Call):
    """13. ``dispatch`` on the hot path's event loop (``builtin:http_api``)."""
    call.dispatched_at = timezone.now()
    result = await run_provider_async(call.plan, call.body, _context(call))
    call.finished_at = timezone.now()
    return result


def dispatching(call: Call):
    """The hot-path step for 13: on the event loop when the provider can wait there
    (``builtin:http_api``), else in a pool thread (``builtin:fs``, WASM)."""
    if providers_on_loop(call.plan):
        return OnLoop(dispatch, dispatch_on_loop, call)
    return InThread(dispatch, call)


def _context(call: Call) -> ProviderContext:
    return ProviderContext(
        trace_id=call.trace_id,
        fs_root=fs_root(call.lease.organization_id),
        secrets=secret_value,
        module_bytes=_module_bytes,
    )


def check_response(call: Call) -> None:
    """14. The output against the action's response schema; a mismatch is the provider's
    failure (the receipt says so)."""
    result = call.result
    if result.ok:
        problem = call.manifest.response_problem(result.output)
        if problem:
            from dataclasses import replace

            from envelopes.gate.providers.result import Failure

            call.result = replace(result, failure=Failure("provider_error", f"response schema: {problem}"))


def verify(call: Call) -> None:
    """15. The verifier's outcome on what the provider did."""
    call.verification = run_verifier(call.plan, call.result)


# --- helpers ---------------------------------------------------------------------------------


def _budgets(lease) -> dict | None:
    limits = lease.budgets
    if limits is None:
        return None
    if isinstance(limits, dict):
        return limits
    return {k: getattr(limits, k) for k in ("max_calls", "max_cost_usd_cents") if getattr(limits, k, None) is not None}


def fs_root(organization_id) -> str:
    """The directory ``builtin:fs`` works under for an organization's agents (created once
    per process, and again if it went away)."""
    root = os.path.join(settings.MANDATE_GATE_FS_ROOT, str(organization_id))
    if root not in _roots or not os.path.isdir(root):
        os.makedirs(root, exist_ok=True)
        _roots.add(root)
    return root


_roots: set[str] = set()


def secret_value(name: str) -> str | None:
    """A declared secret's value: the environment variable ``MANDATE_SECRET_<NAME>`` (never
    stored, never logged, never in a receipt)."""
    return os.environ.get(f"MANDATE_SECRET_{name.upper()}")


def _module_bytes(digest: str) -> bytes | None:
    for manifest in registry().all():
        if manifest.provider_module_digest == digest and manifest.digest_ok:
            return manifest.module_bytes
    return None
