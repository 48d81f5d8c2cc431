"""Deciding from the inbox: every button, the bulk acknowledge and every "why not" go
through the envelopes core's one decision path (``envelopes.services.decide``), which
applies the rules of the envelope's kind. This module only builds the actor and the
decision from what a page knows."""

from envelopes.choices import EnvelopeKind
from envelopes.models import ApprovalRequest, Envelope, GateApproval
from envelopes.services import decide as core
from governance.errors import DomainError, NotFound


def actor(person, roles=None, teams=None) -> core.Actor:
    return core.Actor.of_person(person, roles, teams)


def request_refusal(approval: ApprovalRequest, who: core.Actor, action: str) -> DomainError | None:
    """Why ``who`` may not take ``action`` on an agent's request now; None when they may."""
    return core.refusal(EnvelopeKind.APPROVAL_REQUEST, approval, who, core.Decision(action))


def escalation_refusal(envelope: Envelope, who: core.Actor) -> DomainError | None:
    """Why ``who`` may not decide an escalated evaluation now; None when they may."""
    return core.refusal(EnvelopeKind.EVALUATION, envelope, who, core.Decision("approve"))


def decide_request(
    organization_id, request_id, person, action: str, *, comment: str = "", choice=None, input_text: str = ""
) -> ApprovalRequest:
    """One person's action on an agent's request (approve, reject, acknowledge, choose, answer,
    request_changes, withdraw_tweak); the request, or a DomainError saying why not."""
    decision = core.Decision(action, comment=comment or "", choice=choice, input_text=input_text or "")
    try:
        outcome = core.decide(organization_id, request_id, actor(person), decision, kind=EnvelopeKind.APPROVAL_REQUEST)
    except NotFound:
        raise NotFound("request not found") from None
    return outcome.subject


def review_escalation(organization, envelope_id, decision: str, person, notes: str = "") -> Envelope:
    """Approve or reject an escalated evaluation; the closed envelope, or a DomainError
    (``Conflict`` when it no longer waits)."""
    decided = core.Decision(decision, comment=notes or "")
    return core.decide(organization.pk, envelope_id, actor(person), decided, kind=EnvelopeKind.EVALUATION).envelope


def acknowledge_all(organization_id, request_ids, person) -> list[core.Outcome]:
    """Bulk acknowledge: one batch through the core, each card on its own."""
    who = actor(person)
    items = [(rid, who, core.Decision("acknowledge")) for rid in request_ids]
    return core.decide_many(organization_id, items, kind=EnvelopeKind.APPROVAL_REQUEST)


def held_action_refusal(approval: GateApproval, who: core.Actor) -> DomainError | None:
    """Why ``who`` may not decide a held action now; None when they may."""
    return core.refusal(EnvelopeKind.ACTION, approval, who, core.Decision("approve"))


def decide_held_action(
    organization_id, envelope_id, person, action: str, *, reason: str = "", learn_domain: str = "", learn_path: str = ""
) -> GateApproval:
    """Approve (optionally learning the domain or path it was held for) or deny a held
    action; the approval as the core left it (``claimed`` once approved: the gate runs the
    stored plan after the commit), or a DomainError saying why not."""
    detail = {"learn_domain": learn_domain, "learn_path": learn_path} if action == "approve" else {}
    decision = core.Decision(action, comment=reason or "", detail=detail)
    try:
        outcome = core.decide(organization_id, envelope_id, actor(person), decision, kind=EnvelopeKind.ACTION)
    except NotFound:
        raise NotFound("held action not found") from None
    return outcome.subject
