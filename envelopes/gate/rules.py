"""A held action's rules for the core's one decision path (``envelopes/services/decide.py``).

A held action waits for an operator. ``approve`` claims it (pending → claimed: from then on
nobody else may approve or deny it, so concurrent approvals execute it exactly once); the
approving entry then executes the stored plan and the system records how that ended
(``complete``: approved, or ``fail``: failed), closing the envelope with the receipt in the
same transaction. ``deny`` closes it as denied; ``timeout`` (the sweeper) as expired.
Approving and denying need ``platform.operator`` (or ``platform.admin``, which implies it),
and a held action past its ``expires_at`` is decided by nobody but the sweeper; a draining
gate starts no execution, so approving waits for the drain to end (denying does not).
"""

from functools import partial

from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone

from envelopes.choices import EnvelopeKind
from envelopes.models import GateApproval, GateApprovalState
from envelopes.services.decide import Actor, Decision, Verdict
from evidence.services.chain import EventDraft
from governance.choices import Role, expand_roles
from governance.control_characters import CONTROL_CHARACTERS
from governance.errors import Conflict, DomainError, Invalid, Refused, Unavailable
from governance.gate.state import gate_state

MAX_REASON_CHARS = 500

OPERATOR_ACTIONS = ("approve", "deny")
SYSTEM_ACTIONS = ("complete", "fail", "timeout")


class ActionRules:
    kind = EnvelopeKind.ACTION
    envelope_fields = ()

    # Set by the gate package (``envelopes/apps.py``):
    # ``run_claimed(approval_id)`` executes a claimed approval's stored plan; it runs after the
    # claim commits, in the thread of whoever approved (inbox or API alike), and records how it
    # ended with a ``complete`` or ``fail`` decision. ``record_result(approval, result)`` writes
    # the receipt and the execution row inside that decision's transaction.
    run_claimed = None
    record_result = None

    def load(self, envelopes) -> dict:
        rows: QuerySet = GateApproval.objects.select_for_update().filter(envelope__in=[e.pk for e in envelopes])
        return {row.envelope_id: row for row in rows.select_related("envelope")}

    def refusal(self, approval: GateApproval, actor: Actor, decision: Decision) -> DomainError | None:
        action = decision.action
        if action in SYSTEM_ACTIONS:
            if actor.kind != "system":
                return Refused("only the gate records how an approved action ended")
            if action == "timeout":
                return None if approval.state == GateApprovalState.PENDING else Conflict(f"already {approval.state}")
            return None if approval.state == GateApprovalState.CLAIMED else Conflict(f"not claimed ({approval.state})")
        if action not in OPERATOR_ACTIONS:
            return Invalid(f"decision must be one of {', '.join(OPERATOR_ACTIONS)}")
        if approval.state != GateApprovalState.PENDING:
            return Conflict(f"approval {approval.approval_id} is {approval.state}", code="not_pending")
        if actor.kind != "system" and not expand_roles(actor.roles) & {Role.PLATFORM_OPERATOR}:
            return Refused(
                "deciding held actions needs platform.operator or platform.admin",
                required_permission="approvals:write",
            )
        if approval.expires_at <= timezone.now():
            return Conflict(f"approval {approval.approval_id} expired at {approval.expires_at:%Y-%m-%d %H:%M:%S} UTC")
        if action == "approve" and gate_state().draining:
            return Unavailable("the gate is draining: approving waits until the drain ends", code="draining")
        return None

    def apply(self, approval: GateApproval, actor: Actor, decision: Decision, now) -> Verdict:
        detail = decision.detail or {}
        base = {"approval_id": approval.approval_id, "trace_id": approval.trace_id, "action_id": approval.action_id}
        if decision.action == "approve":
            approval.state = GateApprovalState.CLAIMED
            approval.decided_by, approval.decided_at = actor.id, now
            approval.operator_binding = detail.get("operator_binding", "")
            approval.learn_domain = detail.get("learn_domain", "") or ""
            approval.learn_path = detail.get("learn_path", "") or ""
            body = {**base, "approved_by": actor.id, "plan_hash": approval.plan_hash}
            if approval.learn_domain:
                body["learn_domain"] = approval.learn_domain
            return Verdict("claimed", [EventDraft("GATE_APPROVAL_CLAIMED", body, *actor.performer, now)])
        if decision.action == "deny":
            approval.state, approval.decided_by, approval.decided_at = GateApprovalState.DENIED, actor.id, now
            approval.deny_reason = CONTROL_CHARACTERS.sub("", decision.comment or "")[:MAX_REASON_CHARS]
            body = {**base, "denied_by": actor.id, "deny_reason": approval.deny_reason}
            return Verdict("denied", [EventDraft("GATE_APPROVAL_DENIED", body, *actor.performer, now)], closes=True)
        if decision.action == "timeout":
            approval.state = GateApprovalState.EXPIRED
            return Verdict("expired", [EventDraft("GATE_APPROVAL_EXPIRED", base, *actor.performer, now)], closes=True)
        # complete | fail: how the claimed plan's execution ended
        approval.state = GateApprovalState.APPROVED if decision.action == "complete" else GateApprovalState.FAILED
        approval.receipt_id = detail.get("receipt_id", "")
        approval.failure = CONTROL_CHARACTERS.sub("", decision.comment or "")[:MAX_REASON_CHARS]
        if "learned_domain" in detail:  # what was learned, now that it ran ("" when nothing)
            approval.learn_domain, approval.learn_path = detail["learned_domain"], detail.get("learned_path", "")
        # handed to save(): the run's receipt and execution rows, or the refusal's ledger event
        approval.result, approval.refusal = detail.get("result"), detail.get("refusal")
        event = "GATE_APPROVAL_EXECUTED" if decision.action == "complete" else "GATE_APPROVAL_FAILED"
        body = {**base, "receipt_id": approval.receipt_id, "state": approval.state}
        if approval.failure:
            body["failure"] = approval.failure
        return Verdict(approval.state, [EventDraft(event, body, *actor.performer, now)], closes=True)

    def save(self, approvals, now) -> None:
        for approval in approvals:
            fields = ["state", "decided_by", "decided_at", "operator_binding", "deny_reason"]
            fields += ["learn_domain", "learn_path", "receipt_id", "failure"]
            approval.save(update_fields=fields)
            result = getattr(approval, "result", None)
            if result is not None and type(self).record_result is not None:
                type(self).record_result(approval, result)
            if approval.state == GateApprovalState.CLAIMED and type(self).run_claimed is not None:
                transaction.on_commit(partial(type(self).run_claimed, approval.approval_id))
