"""Held actions: holding a call for a person, and executing it once approved.

A held call becomes an Envelope of kind ``action`` (awaiting review, in the one inbox) with a
``GateApproval`` row holding the plan exactly as it was built (``plan_hash`` over it). Any
entry that approves — the inbox, ``POST /v1/approvals/{id}/approve`` — decides through the
core (``ActionRules``): the claim commits, then ``run_claimed`` executes the *stored* plan
(never the live manifest), re-verifying its hash, and records how it ended with a ``complete``
or ``fail`` decision whose transaction also writes the receipt, the execution row and the
ledger event. Concurrent approvals of one id: the first claims it, the others get 409.
"""

import json
import logging
import uuid
from dataclasses import dataclass, replace
from datetime import timedelta
from urllib.parse import urlsplit

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from controlplane.gate.learned import learn_domain, learn_path
from controlplane.gate.registry import registry
from envelopes.choices import EnvelopeKind, EnvelopeState
from envelopes.gate import budgets
from envelopes.gate.plan import BUILTIN_FS, BUILTIN_HTTP, ExecutionPlan
from envelopes.gate.providers import http_api
from envelopes.gate.steps import dispatching, recording
from envelopes.gate.steps.call import Call
from envelopes.models import Envelope, GateApproval, GateApprovalState
from envelopes.services.decide import SYSTEM, Actor, Decision, announce_on_commit, decide
from envelopes.state import StateWalk
from evidence.canonical import canonical_hash
from evidence.services.chain import EventDraft, append_events, json_native
from evidence.services.gate_events import gate_event
from governance.errors import Conflict, GateError, Refused
from governance.gate.ids import new_id
from governance.gate.state import gate_state
from governance.hotpath import HotRequest

logger = logging.getLogger("mandate.gate")

HOLD_REASONS = {
    "risk_level_high": "the action's risk level needs a person",
    "sensitive_path": "the call touches a sensitive path",
    "unresolved_path": "the call reaches a path not on the action's allowlist",
    "unresolved_domain": "the call reaches a domain not on the action's allowlist",
}


def hold_reason_text(code: str | None) -> str:
    return HOLD_REASONS.get(code or "", code or "held by policy")


@transaction.atomic
def hold_call(call: Call) -> GateApproval:
    """Step 10: the held action, its evidence (the envelope's chain, and the call's ledger
    event, decision ``pending_approval``) and a notification for the live inboxes."""
    now = timezone.now()
    lease = call.lease
    envelope_id = uuid.uuid4()
    approval_id = new_id("apr")
    plan = call.plan.to_dict()
    plan_hash = call.plan.plan_hash()
    reason = hold_reason_text(call.policy.hold_reason)
    walk = StateWalk(EnvelopeState.RECEIVED)
    created = {
        "kind": EnvelopeKind.ACTION,
        "approval_id": approval_id,
        "trace_id": call.trace_id,
        "action_id": call.action_id,
        "agent_id": lease.agent_id,
        "session_id": lease.session_id,
        "request_hash": call.request_hash,
        "plan_hash": plan_hash,
        "hold_reason": reason,
    }
    events = [
        EventDraft("ENVELOPE_CREATED", created, "agent", lease.agent_id, now),
        EventDraft("ESCALATION_PENDING", {"state": walk.to(EnvelopeState.AWAITING_REVIEW)}, occurred_at=now),
    ]
    stored = append_events(str(envelope_id), events, new_chain=True)
    raw = call.request.body.decode("utf-8")
    envelope = Envelope.objects.create(
        id=envelope_id,
        organization_id=lease.organization_id,
        kind=EnvelopeKind.ACTION,
        state=walk.state,
        request_source=f"lease:{lease.session_id}",
        request_id=call.trace_id,
        submitted_raw=raw,
        submitted_hash=canonical_hash(json_native(call.body)),
        received_at=call.received_at,
        agent_id=lease.agent_id,
        created_at=now,
        updated_at=now,
        audit_event_ids=[str(e.id) for e in stored],
        first_event_hash=stored[0].hash,
        final_event_hash=stored[-1].hash,
    )
    approval = GateApproval.objects.create(
        envelope=envelope,
        approval_id=approval_id,
        trace_id=call.trace_id,
        action_id=call.action_id,
        action_version=call.manifest.version,
        risk_level=call.manifest.risk_level,
        agent_id=lease.agent_id,
        session_id=lease.session_id,
        lease_jti=lease.lease_jti,
        epoch=lease.epoch,
        hold_reason=reason,
        plan=plan,
        plan_hash=plan_hash,
        request_body=call.body,
        request_hash=call.request_hash,
        policy_version=str(call.policy.policy_version),
        budget_snapshot=call.budget.as_dict() if call.budget is not None else {},
        expires_at=now + timedelta(seconds=settings.MANDATE_GATE_APPROVAL_TTL_SECONDS),
        created_at=now,
    )
    held = gate_event(
        "GATE_ACTION_CALL",
        trace_id=call.trace_id,
        action_id=call.action_id,
        principal=lease.agent_id,
        session_id=lease.session_id,
        decision="pending_approval",
        approval_id=approval_id,
        request_hash=call.request_hash,
        plan_hash=plan_hash,
        hold_reason=call.policy.hold_reason,
    )
    append_events(call.trace_id, [held], new_chain=True)
    announce_on_commit(lease.organization_id, [envelope.pk])
    return approval


# --- executing an approved plan ------------------------------------------------------------


@dataclass(frozen=True)
class HeldLease:
    """What the execution of an approved plan needs of the lease the call came with."""

    agent_id: str
    session_id: str
    organization_id: object
    epoch: int
    lease_jti: str
    budgets: None = None


def run_claimed(approval_id: str) -> None:
    """Execute a claimed approval's stored plan, then decide ``complete`` or ``fail`` (with the
    receipt, in that decision's transaction). Runs after the claim commits, once."""
    approval = GateApproval.objects.select_related("envelope").get(approval_id=approval_id)
    organization_id = approval.envelope.organization_id
    call = _call_of(approval)
    failure = _refusal_to_run(approval, call)
    if failure:
        decide(
            organization_id, approval.envelope_id, SYSTEM, Decision("fail", comment=failure), kind=EnvelopeKind.ACTION
        )
        return
    try:
        budgets.debit_if_counted(approval.session_id)  # the held call was not counted yet
    except GateError as exhausted:
        decide(
            organization_id,
            approval.envelope_id,
            SYSTEM,
            Decision("fail", comment=exhausted.code),
            kind=EnvelopeKind.ACTION,
        )
        return
    call.plan = _approved_plan(call.plan, call.body)
    dispatching.grant(call)
    call.result = dispatching.dispatch(call)
    dispatching.check_response(call)
    dispatching.verify(call)
    receipt_id = new_id("rcpt")
    if call.result.ok:
        call.learned_domain = _learn(approval)
    decision = Decision(
        "complete" if call.result.ok else "fail",
        comment="" if call.result.ok else call.result.failure.reason,
        detail={"receipt_id": receipt_id, "result": call},
    )
    decide(organization_id, approval.envelope_id, SYSTEM, decision, kind=EnvelopeKind.ACTION)


def record_result(approval: GateApproval, call: Call) -> None:
    """``ActionRules.save``'s hook: the receipt, execution row and ledger event of the approved
    plan's execution, in the ``complete``/``fail`` decision's transaction."""
    recording.write_evidence(call, approval.receipt_id)


def _call_of(approval: GateApproval) -> Call:
    body = approval.request_body
    request = HotRequest(
        "POST", f"/v1/actions/{approval.action_id}/execute", {"action_id": approval.action_id}, {}, b""
    )
    call = Call.start(request)
    call.trace_id = approval.trace_id
    call.body = body
    call.request_hash = approval.request_hash
    call.approval = approval
    call.manifest = registry().get(approval.action_id)
    call.lease = HeldLease(
        approval.agent_id, approval.session_id, approval.envelope.organization_id, approval.epoch, approval.lease_jti
    )
    try:
        call.plan = ExecutionPlan.from_dict(approval.plan)
    except (TypeError, ValueError):
        call.plan = None
    return call


def _refusal_to_run(approval: GateApproval, call: Call) -> str:
    """Why the stored plan must not run: it was changed since it was held, the gate's epoch
    moved on (revoke-all), or the gate is draining."""
    if call.plan is None or call.plan.plan_hash() != approval.plan_hash:
        return "plan_tampered: the stored plan no longer matches its plan_hash"
    if gate_state().epoch != approval.epoch:
        return "revoked: the revocation epoch advanced after the action was held"
    if call.manifest is None:
        return "action_not_found: the action left the catalogue"
    return ""


def _approved_plan(plan: ExecutionPlan, body) -> ExecutionPlan:
    """The stored plan plus the one target the person saw and approved: the request's host (an
    HTTP action) or path (a file action). A call held because its domain or path was not known
    yet could otherwise never run (the egress guard and the fs rules would refuse it); denied
    paths still win in the provider."""
    try:
        if plan.provider_module_digest == BUILTIN_HTTP and plan.template is not None:
            host = (urlsplit(http_api.target_url(plan, body)).hostname or "").lower()
            if host and host not in plan.egress.allowed_domains:
                return replace(plan, egress=replace(plan.egress, allowed_domains=(*plan.egress.allowed_domains, host)))
        elif plan.provider_module_digest == BUILTIN_FS:
            path = str(body.get("path", "."))
            if path not in plan.fs.allowed_paths:
                return replace(plan, fs=replace(plan.fs, allowed_paths=(*plan.fs.allowed_paths, path)))
    except http_api.TemplateError:
        pass  # the provider reports it
    return plan


def _learn(approval: GateApproval) -> str:
    """What the approver asked to learn, now that the call succeeded. A value the gate will not
    learn (an IP address, ``localhost``...) is logged and skipped: the call already ran, and its
    receipt must still be recorded."""
    try:
        return _learn_targets(approval)
    except GateError as refused:
        logger.warning(
            "gate: not learned after approval",
            extra={"approval_id": approval.approval_id, "error": refused.code, "reason": refused.reason},
        )
        return ""


def _learn_targets(approval: GateApproval) -> str:
    learned = ""
    if approval.learn_domain:
        learn_domain(
            approval.action_id,
            approval.learn_domain,
            "approval",
            approval.decided_by,
            approval.approval_id,
            exist_ok=True,
        )
        learned = approval.learn_domain
    if approval.learn_path:
        learn_path(
            approval.action_id,
            approval.learn_path,
            "approval",
            approval.decided_by,
            approval.approval_id,
            exist_ok=True,
        )
    return learned


# --- what the API answers ------------------------------------------------------------------


def find(approval_id: str, organization_id=None) -> GateApproval:
    rows = GateApproval.objects.select_related("envelope").filter(approval_id=str(approval_id)[:64])
    if organization_id is not None:
        rows = rows.filter(envelope__organization_id=organization_id)
    approval = rows.first()
    if approval is None:
        raise GateError(404, "approval_not_found")
    return approval


def operator_decide(organization_id, approval_id: str, actor: Actor, action: str, **options) -> GateApproval:
    """Approve or deny through the core; an approval that is not pending answers 404 (as
    LatchGate: consumed or expired), an operator without the role 403."""
    approval = find(approval_id, organization_id)
    if approval.state != GateApprovalState.PENDING or approval.expires_at <= timezone.now():
        raise GateError(404, "approval_not_found", reason=f"approval is {approval.state}")
    try:
        decide(organization_id, approval.envelope_id, actor, Decision(action, **options), kind=EnvelopeKind.ACTION)
    except Conflict as exc:
        raise GateError(404, "approval_not_found", reason=str(exc)) from exc
    except Refused as exc:
        raise GateError(403, "forbidden", reason=str(exc)) from exc
    approval.refresh_from_db()
    return approval


def summary(approval: GateApproval) -> dict:
    return {
        "approval_id": approval.approval_id,
        "action_id": approval.action_id,
        "state": approval.state,
        "status": approval.state,
        "agent_id": approval.agent_id,
        "session_id": approval.session_id,
        "trace_id": approval.trace_id,
        "risk_level": approval.risk_level,
        "hold_reason": approval.hold_reason,
        "created_at": approval.created_at,
        "expires_at": approval.expires_at,
        "decided_by": approval.decided_by or None,
    }


def detail(approval: GateApproval) -> dict:
    """The full plan review: what would run, and nothing secret (secret names only)."""
    plan = approval.plan
    return {
        **summary(approval),
        "action_version": approval.action_version,
        "provider_module_digest": plan.get("provider_module_digest"),
        "plan_hash": approval.plan_hash,
        "request_hash": approval.request_hash,
        "request_body": approval.request_body,
        "approved_targets": {
            "template": plan.get("template"),
            "fs": plan.get("fs"),
        },
        "secret_names": [s["name"] if isinstance(s, dict) else s for s in plan.get("secrets") or []],
        "egress": plan.get("egress"),
        "resource_limits": plan.get("resource_limits"),
        "verifier_kind": plan.get("verifier_kind"),
        "policy_version": approval.policy_version,
        "budget_snapshot": approval.budget_snapshot,
        "deny_reason": approval.deny_reason or None,
        "receipt_id": approval.receipt_id or None,
        "failure": approval.failure or None,
    }


def execution_answer(approval: GateApproval) -> tuple[int, dict]:
    """What ``approve`` answers once the plan ran: the execute body (with ``approval``), or
    502 when it failed."""
    if approval.state != GateApprovalState.APPROVED:
        if approval.failure.startswith(("plan_tampered", "revoked", "action_not_found")):
            raise GateError(409, approval.failure.split(":", 1)[0])
        raise GateError(502, "action_execution_failed")
    from envelopes.models import GateExecution
    from evidence.models import Receipt

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
    return 200, json.loads(json.dumps(body, default=str))
