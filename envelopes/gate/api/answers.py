"""What ``/v1/approvals`` answers, in LatchGate's words: a held action's summary (the list),
its plan review (secret names, never values), the agent's poll, and the execution of an
approved plan (the execute answer, with ``approval``)."""

from urllib.parse import urlsplit

from envelopes.gate.approvals import REFUSAL_STATUS, effective_state
from envelopes.gate.plan import BUILTIN_FS, BUILTIN_HTTP, ExecutionPlan
from envelopes.gate.providers import http_api
from envelopes.models import GateApproval, GateApprovalState, GateExecution
from evidence.models import Receipt
from governance.errors import GateError

# How often an agent should poll (LatchGate's hints): a claimed plan is running.
RETRY_AFTER_SECONDS = {GateApprovalState.PENDING: 2, GateApprovalState.CLAIMED: 1}


def summary(approval: GateApproval) -> dict:
    state = effective_state(approval)
    return {
        "approval_id": approval.approval_id,
        "action_id": approval.action_id,
        "state": state,
        "status": state,
        "agent_id": approval.agent_id,
        "session_id": approval.session_id,
        "trace_id": approval.trace_id,
        "risk_level": approval.risk_level,
        "hold_reason": approval.hold_reason,
        "created_at": approval.created_at,
        "expires_at": approval.expires_at,
        "decided_by": approval.decided_by or None,
        "decided_at": approval.decided_at,
    }


def detail(approval: GateApproval) -> dict:
    """The full plan review: what would run, and nothing secret (secret names only)."""
    plan = approval.plan if isinstance(approval.plan, dict) else {}
    return {
        **summary(approval),
        "action_version": approval.action_version,
        "provider_module_digest": plan.get("provider_module_digest"),
        "plan_hash": approval.plan_hash,
        "request_hash": approval.request_hash,
        "request_body": approval.request_body,
        "approved_targets": {"template": plan.get("template"), "fs": plan.get("fs"), **targets(plan, approval)},
        "secret_names": [s["name"] if isinstance(s, dict) else s for s in plan.get("secrets") or []],
        "egress": plan.get("egress"),
        "resource_limits": plan.get("resource_limits"),
        "verifier_kind": plan.get("verifier_kind"),
        "declared_side_effects": plan.get("declared_side_effects"),
        "policy_version": approval.policy_version,
        "budget_snapshot": approval.budget_snapshot,
        "epoch": approval.epoch,
        "deny_reason": approval.deny_reason or None,
        "receipt_id": approval.receipt_id or None,
        "failure": approval.failure or None,
    }


def targets(plan: dict, approval: GateApproval) -> dict:
    """Where the held call would go: the URL its template makes of the request (and its host),
    or the file it touches."""
    body = approval.request_body if isinstance(approval.request_body, dict) else {}
    digest = plan.get("provider_module_digest")
    if digest == BUILTIN_HTTP:
        try:
            url = http_api.target_url(ExecutionPlan.from_dict(plan), body)
        except Exception:  # noqa: BLE001 (a plan or body the template cannot fill: show none)
            return {"url": None, "domains": []}
        return {"url": url, "domains": [urlsplit(url).hostname or ""]}
    if digest == BUILTIN_FS:
        return {"paths": [str(body.get("path", "."))], "operation": body.get("operation")}
    return {}


def poll(approval: GateApproval) -> dict:
    """The agent's view (LatchGate's poll; no plan detail): ``state`` is the held action's own;
    ``status`` what the SDKs read, ``pending`` while the approved plan runs (their poll loops stop
    on anything else); an approved one names the receipt, a denied or failed one says why."""
    state = effective_state(approval)
    body = {
        "approval_id": approval.approval_id,
        "state": state,
        "status": GateApprovalState.PENDING if state == GateApprovalState.CLAIMED else state,
    }
    if state in RETRY_AFTER_SECONDS:
        body["retry_after_seconds"] = RETRY_AFTER_SECONDS[state]
    if state == GateApprovalState.APPROVED and approval.receipt_id:
        body["receipt_id"] = approval.receipt_id
    elif state == GateApprovalState.DENIED:
        body["reason"] = approval.deny_reason or "no reason provided"
    elif state == GateApprovalState.FAILED:  # a refusal's code; any other failure, LatchGate's word
        code = approval.failure.split(":", 1)[0]
        body["reason"] = code if code in REFUSAL_STATUS else "execution_failed"
    return body


def denied(approval: GateApproval) -> dict:
    return {
        "decision": "deny",
        "trace_id": approval.trace_id,
        "action_id": approval.action_id,
        "approval_id": approval.approval_id,
        "denied_by": approval.decided_by,
        "deny_reason": approval.deny_reason,
    }


def failure_of(approval: GateApproval) -> GateError:
    """How approve answers a claimed plan that did not complete: a refusal's own code (``code:
    text`` in ``failure``), the provider's 502, or 500 (ours, or still claimed: unresolved)."""
    code, _, text = approval.failure.partition(":")
    if approval.state != GateApprovalState.FAILED or code in ("internal_error", "evidence_persistence_failed"):
        return GateError(500, code if code == "evidence_persistence_failed" else "internal_error")
    if code in REFUSAL_STATUS:
        return GateError(REFUSAL_STATUS[code], code, reason=text.strip())
    return GateError(502, "action_execution_failed")


def executed(approval: GateApproval) -> dict:
    """What ``approve`` answers once the stored plan ran: the execute body with ``approval``
    (and ``learned_domain``); a plan that was refused or failed raises its code."""
    if approval.state != GateApprovalState.APPROVED:
        raise failure_of(approval)
    execution = GateExecution.objects.get(trace_id=approval.trace_id)
    receipt = Receipt.objects.get(receipt_id=execution.receipt_id)
    outcome = receipt.verification_outcome.get("status")
    kind = receipt.normalized_result.get("kind")
    body = {
        "trace_id": approval.trace_id,
        "action_id": approval.action_id,
        "grant_id": execution.grant_id,
        "receipt_id": receipt.receipt_id,
        "output": receipt.provider_receipt,
        "verification_outcome": outcome,
        "verification": {
            "outcome": outcome,
            "is_fully_successful": kind == "success" and outcome in ("verified", "unverifiable_declared"),
        },
        "runtime": execution.runtime,
        "approval": {
            "approval_id": approval.approval_id,
            "approved_by": approval.decided_by,
            "operator_binding": approval.operator_binding or None,
        },
    }
    if approval.learn_domain:
        body["learned_domain"] = approval.learn_domain
    return body
