"""Held actions: holding a call for a person, and executing it once approved.

A held call becomes an Envelope of kind ``action`` (awaiting review, in the one inbox) with a
``GateApproval`` row holding the plan exactly as it was built (``plan_hash`` over it; the
hashes, the lease's session and epoch are also in the envelope's first ledger event, which
nobody can change). Any entry that approves — the inbox, ``POST /v1/approvals/{id}/approve``
— decides through the core (``ActionRules``): the claim commits, then ``run_claimed`` checks
the stored plan against the ledger, the epoch, the trust and the budget, executes the
*stored* plan (never the live manifest) and records how it ended with a ``complete`` or
``fail`` decision whose transaction also writes the receipt, the execution row and the
ledger event. Concurrent approvals of one id: the first claims it, the others are refused.
"""

import logging
import uuid
from dataclasses import dataclass, replace
from datetime import timedelta
from urllib.parse import urlsplit

from django.conf import settings
from django.db import DatabaseError, transaction
from django.utils import timezone

from controlplane.gate.learned import learn_domain, learn_path
from controlplane.gate.registry import registry
from controlplane.gate.targets import TargetError, validate_glob, validate_learned_domain
from envelopes.choices import EnvelopeKind, EnvelopeState
from envelopes.gate import budgets, metrics
from envelopes.gate.plan import BUILTIN_FS, BUILTIN_HTTP, ExecutionPlan
from envelopes.gate.providers import http_api
from envelopes.gate.steps import dispatching, recording
from envelopes.gate.steps.call import Call
from envelopes.gate.steps.request import request_hash
from envelopes.models import Envelope, GateApproval, GateApprovalState
from envelopes.services.decide import SYSTEM, Actor, Decision, announce_on_commit, decide
from envelopes.state import StateWalk
from evidence.canonical import canonical_hash
from evidence.models import AuditEvent
from evidence.services.chain import EventDraft, append_events, json_native
from evidence.services.gate_events import gate_event
from governance.errors import Conflict, GateError, NotFound, Refused, Unavailable
from governance.gate.ids import new_id
from governance.gate.state import gate_state
from governance.hotpath import HotRequest
from governance.models import GateLease

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
        "epoch": lease.epoch,
        "lease_jti": lease.lease_jti,
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

# Why a claimed plan did not run (the first word of the approval's ``failure``), as the approve
# endpoint answers it; any other failure is the provider's (502) or ours (500).
REFUSAL_STATUS = {
    "plan_tampered": 409,
    "revoked": 409,
    "action_not_found": 409,
    "action_not_registered": 403,
    "action_digest_mismatch": 403,
    "budget_exhausted": 403,
    "budget_session_not_found": 403,
}
# What the held action's first ledger event says, compared with its row before it runs.
ANCHORED_FIELDS = ("approval_id", "trace_id", "action_id", "agent_id", "session_id", "plan_hash", "request_hash")


@dataclass(frozen=True)
class HeldLease:
    """What the execution of an approved plan needs of the lease the call came with."""

    agent_id: str
    session_id: str
    organization_id: object
    epoch: int
    lease_jti: str
    budgets: dict | None = None
    found: bool = True  # its GateLease row is there (deleting it revokes the lease)


def run_claimed(approval_id: str) -> None:
    """Execute a claimed approval's stored plan, then decide ``complete`` or ``fail`` (with the
    receipt, in that decision's transaction). Runs after the claim commits, once; whatever
    happens, the held action does not stay claimed unless the database itself is away."""
    approval = GateApproval.objects.select_related("envelope").get(approval_id=approval_id)
    if approval.state != GateApprovalState.CLAIMED:
        return
    metrics.execution_started()
    try:
        _run(approval)
    except Exception:  # noqa: BLE001 (a bug or the database: record it as the failure it is)
        logger.exception("gate: approved plan not recorded [%s]", approval.approval_id)
        _close_failed(approval, GateError(500, "internal_error"), "the stored plan could not be run")
    finally:
        metrics.execution_ended()


def _run(approval: GateApproval) -> None:
    call = _call_of(approval)
    refusal = _refusal_to_run(approval, call)
    if refusal is None:
        try:
            budgets.snapshot(approval.session_id, call.lease.budgets)
            dispatching.debit(call)
        except GateError as exc:
            refusal = exc
    if refusal is not None:
        metrics.failed(approval.action_id, refusal.status, refusal.code)
        _decide(approval, Decision("fail", comment=_failure_text(refusal), detail={"result": call, "refusal": refusal}))
        return
    call.plan = _approved_plan(call.plan, call.body)
    try:
        dispatching.grant(call)
        call.result = dispatching.dispatch(call)
    except Exception:
        dispatching.give_back(call)
        raise
    dispatching.check_response(call)
    dispatching.verify(call)
    succeeded = call.verification.is_fully_successful(call.result)
    learned = _learn(approval) if succeeded else ("", "")
    call.learned_domain = learned[0]
    failure = call.result.failure
    detail = {"receipt_id": new_id("rcpt"), "result": call, "learned_domain": learned[0], "learned_path": learned[1]}
    comment = "" if failure is None else f"{failure.failure_class}: {failure.reason}"
    try:
        _decide(approval, Decision("complete" if failure is None else "fail", comment=comment, detail=detail))
    except DatabaseError:
        logger.exception("gate: evidence of an approved plan not written [%s]", approval.approval_id)
        metrics.failed(approval.action_id, 500, "evidence_persistence_failed")
        _close_failed(approval, GateError(500, "evidence_persistence_failed"), "receipt or ledger write failed")
        return
    duration = call.result.duration_ms / 1000
    metrics.call_finished(approval.action_id, "allow" if failure is None else "error", duration)


def _decide(approval: GateApproval, decision: Decision) -> None:
    decide(approval.envelope.organization_id, approval.envelope_id, SYSTEM, decision, kind=EnvelopeKind.ACTION)


def _failure_text(refusal: GateError) -> str:
    return f"{refusal.code}: {refusal.deny_reason or refusal.reason or refusal.code}"


def _close_failed(approval: GateApproval, refusal: GateError, text: str) -> None:
    """The last resort: fail the claim with ``refusal``'s code; logged if even that fails."""
    try:
        _decide(approval, Decision("fail", comment=f"{refusal.code}: {text}"))
    except Exception:  # noqa: BLE001
        logger.exception("gate: held action %s stays claimed (unresolved)", approval.approval_id)


def record_result(approval: GateApproval, call: Call) -> None:
    """``ActionRules.save``'s hook, in the ``complete``/``fail`` decision's transaction: the
    receipt, execution row and ledger event of the approved plan's execution; or, when it was
    refused before running, the ``GATE_ACTION_CALL`` event saying why (on the call's trace)."""
    refusal = getattr(approval, "refusal", None)
    if refusal is None:
        recording.write_evidence(call, approval.receipt_id)
        return
    event = gate_event(
        "GATE_ACTION_CALL",
        trace_id=approval.trace_id,
        action_id=approval.action_id,
        principal=approval.agent_id,
        session_id=approval.session_id,
        decision="error" if refusal.status >= 500 else "deny",
        error=refusal.code,
        status=refusal.status,
        reason=approval.failure,
        approval_id=approval.approval_id,
    )
    append_events(approval.trace_id, [event])


def _call_of(approval: GateApproval) -> Call:
    request = HotRequest(
        "POST", f"/v1/actions/{approval.action_id}/execute", {"action_id": approval.action_id}, {}, b""
    )
    call = Call.start(request)
    call.trace_id = approval.trace_id
    call.body = approval.request_body
    call.request_hash = approval.request_hash
    call.approval = approval
    call.manifest = registry().get(approval.action_id)
    lease = GateLease.objects.filter(lease_jti=approval.lease_jti).values("budgets").first()
    call.lease = HeldLease(
        approval.agent_id,
        approval.session_id,
        approval.envelope.organization_id,
        approval.epoch,
        approval.lease_jti,
        (lease or {}).get("budgets") or None,
        lease is not None,
    )
    try:
        call.plan = ExecutionPlan.from_dict(approval.plan)
    except (TypeError, ValueError):
        call.plan = None
    return call


def _refusal_to_run(approval: GateApproval, call: Call) -> GateError | None:
    """Why the stored plan must not run: it (or the request, or what the row says about them)
    changed since it was held, its lease was revoked (revoke-all, or its row deleted), the
    action left the catalogue or its module is no longer the trusted one."""
    tampered = _tampering(approval, call)
    if tampered:
        return GateError(409, "plan_tampered", reason=tampered)
    if gate_state(max_age=0).epoch != approval.epoch:
        return GateError(409, "revoked", reason="the revocation epoch advanced after the action was held")
    if not call.lease.found:
        return GateError(409, "revoked", reason="the lease the action was held under was revoked")
    if call.manifest is None:
        return GateError(409, "action_not_found", reason="the action left the catalogue")
    return _untrusted(call.plan)


def _tampering(approval: GateApproval, call: Call) -> str:
    if call.plan is None or call.plan.plan_hash() != approval.plan_hash:
        return "the stored plan no longer matches its plan_hash"
    try:
        body_hash = request_hash(approval.request_body)
    except Exception:  # noqa: BLE001 (not canonical JSON any more)
        body_hash = ""
    if body_hash != approval.request_hash:
        return "the stored request no longer matches its request_hash"
    if call.plan.action_id != approval.action_id:
        return "the stored plan is another action's"
    created = _held_event(approval)
    if created is None:
        return "the held action's ledger record is missing"
    for name in ANCHORED_FIELDS:
        if created.get(name) != getattr(approval, name):
            return f"{name} differs from the ledger's record of the hold"
    for name in ("epoch", "lease_jti"):  # held actions recorded before these were anchored lack them
        if name in created and created[name] != getattr(approval, name):
            return f"{name} differs from the ledger's record of the hold"
    return ""


def _held_event(approval: GateApproval) -> dict | None:
    """The payload of the held action's ``ENVELOPE_CREATED`` event (the ledger refuses changes)."""
    first = (approval.envelope.audit_event_ids or [None])[0]
    row = AuditEvent.objects.filter(pk=first, chain_id=approval.envelope.chain_id).values("event_type", "payload")
    row = row.first()
    return row["payload"] if row and row["event_type"] == "ENVELOPE_CREATED" else None


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


def _untrusted(plan: ExecutionPlan) -> GateError | None:
    """A WASM plan runs only a module the catalogue trusts now (the plan's digest)."""
    digest = plan.provider_module_digest
    if not digest.startswith("sha256:"):
        return None
    modules = [m for m in registry().all() if m.provider_module_digest == digest]
    if any(m.digest_ok for m in modules):
        return None
    if modules:
        return GateError(403, "action_digest_mismatch", reason="the held plan's module no longer has its digest")
    return GateError(403, "action_not_registered", reason="the held plan's module is no longer in the catalogue")


def _learn(approval: GateApproval) -> tuple[str, str]:
    """What the approver asked to learn, now that the call succeeded: (domain, path) learned."""
    learned = ["", ""]
    lessons = ((0, learn_domain, approval.learn_domain), (1, learn_path, approval.learn_path))
    for index, learn, value in lessons:
        if not value:
            continue
        try:
            row = learn(approval.action_id, value, "approval", approval.decided_by, approval.approval_id, exist_ok=True)
        except GateError as exc:
            logger.warning("gate: approval %s could not learn %r: %s", approval.approval_id, value, exc.code)
            continue
        learned[index] = row.domain if index == 0 else row.path
    return learned[0], learned[1]


def checked_lessons(learn_domain: str, learn_path: str) -> tuple[str, str]:
    """The domain and path an approver asks to learn, normalized; 400 ``invalid_domain`` or
    ``invalid_path`` before anything is claimed (they are learned after a successful run)."""
    try:
        domain = validate_learned_domain(learn_domain) if learn_domain else ""
    except TargetError as exc:
        raise GateError(400, "invalid_domain", reason=str(exc)) from exc
    try:
        path = validate_glob(learn_path, learned=True) if learn_path else ""
    except TargetError as exc:
        raise GateError(400, "invalid_path", reason=str(exc)) from exc
    return domain, path


# --- deciding and expiring -------------------------------------------------------------------


def find(approval_id: str, organization_id=None) -> GateApproval:
    rows = GateApproval.objects.select_related("envelope").filter(approval_id=str(approval_id)[:64])
    if organization_id is not None:
        rows = rows.filter(envelope__organization_id=organization_id)
    approval = rows.first()
    if approval is None:
        raise GateError(404, "approval_not_found")
    return approval


def operator_decide(organization_id, approval_id: str, actor: Actor, action: str, **options) -> GateApproval:
    """Approve or deny through the core. An approval that is not pending (or past its expiry)
    answers 404 (as LatchGate: consumed or expired), an operator without the role 403,
    approving while the gate drains 503 ``draining``."""
    approval = find(approval_id, organization_id)
    if approval.state != GateApprovalState.PENDING or approval.expires_at <= timezone.now():
        raise GateError(404, "approval_not_found", reason=f"approval is {effective_state(approval)}")
    try:
        decide(organization_id, approval.envelope_id, actor, Decision(action, **options), kind=EnvelopeKind.ACTION)
    except (Conflict, NotFound) as exc:
        raise GateError(404, "approval_not_found", reason=str(exc)) from exc
    except Refused as exc:
        raise GateError(403, "forbidden", reason=str(exc)) from exc
    except Unavailable as exc:
        raise GateError(503, "draining") from exc
    approval.refresh_from_db()
    return approval


def effective_state(approval: GateApproval, now=None) -> str:
    """The state, with a pending held action past its expiry already ``expired`` (the sweeper
    records it within its interval)."""
    if approval.state == GateApprovalState.PENDING and approval.expires_at <= (now or timezone.now()):
        return GateApprovalState.EXPIRED
    return approval.state
