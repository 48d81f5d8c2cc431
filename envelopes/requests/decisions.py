"""Agents' requests decided (AIOS Govern): the request kind's rules for the core's one
decision path (``envelopes.services.decide``), and what the agent is told.

People act (approve, reject, acknowledge, choose, answer, request changes, withdraw them)
under ``eligibility.refusal``; votes count under the request's ``ApprovalRule``; the system
applies timeouts; the agent's own channel supersedes a card it answered with a new one.
Whatever closes a request records DECISION_RECORDED, writes the webhook to the outbox and
wakes long-poll waiters — through the core, so every entry gets the same.
"""

import json
import uuid
from datetime import timedelta

from django.db.models import Prefetch

from envelopes.approval_rules import APPROVED, N_OF_X, ApprovalRule
from envelopes.choices import (
    FINAL_REQUEST_STATUSES,
    EnvelopeKind,
    OnTimeout,
    RequestStatus,
    RequestType,
    TweakStatus,
)
from envelopes.models import Approval, ApprovalRequest, Tweak
from envelopes.requests import eligibility
from envelopes.services.decide import SYSTEM, Actor, Decision, Verdict, decide
from evidence.services.chain import EventDraft
from governance.bulk import update_rows
from governance.errors import Conflict, DomainError, Invalid, NotFound, Refused
from governance.models import Person
from governance.timestamps import rfc3339_isoformat

TIMEOUT_STATUS = {
    OnTimeout.AUTO_APPROVE: RequestStatus.APPROVED,
    OnTimeout.AUTO_REJECT: RequestStatus.REJECTED,
    OnTimeout.EXPIRE: RequestStatus.EXPIRED,
    OnTimeout.ESCALATE: RequestStatus.EXPIRED,  # the ladder's end
}
# An escalated rung never gets less than this, whatever the agent's TTL was.
MIN_ESCALATION_TTL = timedelta(minutes=1)
REQUEST_FIELDS = (
    "status",
    "decided_by",
    "decision_time",
    "comments",
    "choice",
    "input_text",
    "escalation_level",
    "expires_at",
)


# --- what the agent is told -----------------------------------------------------------------


def snapshot(request: ApprovalRequest):
    try:
        return json.loads(request.envelope.submitted_raw)
    except ValueError:
        return request.envelope.submitted_raw


def decision_payload(request: ApprovalRequest) -> dict:
    """What the long-poll returns and the webhook posts once a request is decided."""
    body = {
        "request_id": str(request.pk),
        "status": request.status,
        "approved_by": request.decided_by or None,
        "decision_time": rfc3339_isoformat(request.decision_time),
        "comments": request.comments,
        "envelope_snapshot": snapshot(request),
    }
    if request.type == RequestType.CHOICE:
        body["choice"] = request.choice
    if request.type == RequestType.INPUT_REQUEST:
        body["input"] = request.input_text
    return body


def tweak_payload(request: ApprovalRequest, tweak: Tweak, event: str) -> dict:
    return {
        "event": event,
        "request_id": str(request.pk),
        "tweak_id": str(tweak.pk),
        "request_text": tweak.request_text,
        "requested_by": str(tweak.requested_by_id),
        "envelope_snapshot": snapshot(request),
    }


def current_tweak_event(request: ApprovalRequest) -> dict | None:
    """While a change request is open, the long-poll answers with its event."""
    tweak = request.tweaks.filter(status=TweakStatus.OPEN).first()
    return tweak_payload(request, tweak, "tweak_requested") if tweak else None


# --- the kind's rules -----------------------------------------------------------------------


class RequestRules:
    kind = EnvelopeKind.APPROVAL_REQUEST
    envelope_fields = ()

    def load(self, envelopes):
        by_id = {envelope.pk: envelope for envelope in envelopes}
        requests = (
            ApprovalRequest.objects.select_for_update(of=("self",))
            .select_related("channel", "channel__owner")
            .filter(pk__in=list(by_id))
            .prefetch_related(
                "approvals",
                Prefetch("tweaks", queryset=Tweak.objects.filter(status=TweakStatus.OPEN), to_attr="open_tweaks"),
            )
        )
        subjects = {}
        for request in requests:
            request.envelope = by_id[request.pk]  # the locked row the core saves
            request.votes = list(request.approvals.all())
            request.new_rows, request.changed_tweaks = [], []
            subjects[request.pk] = request
        return subjects

    def refusal(self, request: ApprovalRequest, actor: Actor, decision: Decision) -> DomainError | None:
        if actor.kind == "channel":
            if decision.action != "supersede" or actor.id != str(request.channel_id):
                return Refused("an agent's channel may only supersede its own requests")
            return None
        if actor.kind == "system":
            if decision.action != "timeout":
                return Refused("the system only applies timeouts")
            if request.status in FINAL_REQUEST_STATUSES:
                return Conflict(f"already {request.status}")
            return None
        if actor.person is None:
            return Refused("agents' requests are decided by people signed in as themselves", code="not_eligible")
        refused = eligibility.refusal(request, actor.person, decision.action, roles=actor.roles, teams=actor.teams)
        if refused is None:
            return None
        if refused.code == "decided":
            return Conflict(refused.message)
        if refused.code == "unknown_action":
            return Invalid(refused.message)
        return Refused(refused.message, code=refused.code)

    def apply(self, request: ApprovalRequest, actor: Actor, decision: Decision, now) -> Verdict:
        action, comment = decision.action, (decision.comment or "").strip()
        performer = actor.performer
        who = str(actor.person.pk) if actor.person is not None else actor.id
        if action == "acknowledge":
            _record_decider(request, actor, comment, now)
            return _close(request, RequestStatus.ACKNOWLEDGED, who, performer, now, comments=comment)
        if action == "choose":
            if request.type != RequestType.CHOICE:
                raise Invalid("choose: only choice requests have options")
            choice = _choice_value(request, decision.choice)
            _record_decider(request, actor, comment, now)
            return _close(request, RequestStatus.APPROVED, who, performer, now, comments=comment, choice=choice)
        if action == "answer":
            if request.type != RequestType.INPUT_REQUEST:
                raise Invalid("answer: only input requests take an answer")
            if not (decision.input_text or "").strip():
                raise Invalid("input: the answer must not be empty")
            text = decision.input_text.strip()
            _record_decider(request, actor, comment, now)
            return _close(request, RequestStatus.APPROVED, who, performer, now, comments=comment, input_text=text)
        if action in ("approve", "reject"):
            if request.type in (RequestType.CHOICE, RequestType.INPUT_REQUEST) and action == "approve":
                verb = "choose" if request.type == RequestType.CHOICE else "answer"
                raise Invalid(f"approve: a {request.type} is decided by {verb}")
            return _vote(request, actor, action == "approve", comment, now)
        if action in ("request_changes", "withdraw_tweak"):
            return _tweak(request, actor, action, comment, now)
        if action == "timeout":
            return _timeout(request, now)
        if action == "supersede":
            return _supersede(request, actor, decision.detail["successor_id"], now)
        raise Invalid(f"unknown action {action!r}")

    def save(self, requests, now) -> None:
        update_rows(ApprovalRequest, requests, REQUEST_FIELDS)
        approvals = [row for r in requests for row in r.new_rows if isinstance(row, Approval)]
        tweaks = [row for r in requests for row in r.new_rows if isinstance(row, Tweak)]
        if approvals:
            Approval.objects.bulk_create(approvals)
        if tweaks:
            Tweak.objects.bulk_create(tweaks)
        changed = [tweak for r in requests for tweak in r.changed_tweaks]
        if changed:
            update_rows(Tweak, changed, ["status", "closed_at", "resolved_by"])


def _close(
    request,
    status,
    decided_by,
    performer,
    now,
    *,
    comments="",
    choice=None,
    input_text="",
    extra=None,
    deliver=True,
    preceding=(),
) -> Verdict:
    """Close a pending request with ``status``: every way a request ends comes here."""
    request.status, request.decided_by, request.decision_time = status, decided_by, now
    request.comments, request.choice, request.input_text = comments, choice, input_text
    # A change request still open when the request is decided has nothing left to change.
    for tweak in request.open_tweaks:
        if tweak.status == TweakStatus.OPEN:
            tweak.status, tweak.closed_at = TweakStatus.WITHDRAWN, now
            request.changed_tweaks.append(tweak)
    decision = {"status": status, "decided_by": decided_by, "comments": comments, **(extra or {})}
    if choice is not None:
        decision["choice"] = choice
    if input_text:
        decision["input"] = input_text
    events = [*preceding, EventDraft("DECISION_RECORDED", decision, *performer, now)]
    deliveries = [("decision", decision_payload(request))] if deliver else []
    return Verdict(status, events, closes=True, deliveries=deliveries)


def _choice_value(request: ApprovalRequest, choice):
    options = (request.payload or {}).get("options") or []
    for option in options:
        value = option.get("id", option.get("label")) if isinstance(option, dict) else option
        if choice == value or (isinstance(option, dict) and choice == option.get("label")):
            return value
    raise Invalid("choice: not one of the request's options")


def _record_decider(request: ApprovalRequest, actor: Actor, comment: str, now) -> None:
    """Choosing, answering and acknowledging decide in one act: the person who did it is the
    request's approval, as a vote is ("who acted" and the API's ``approvals`` show it)."""
    if actor.person is not None:
        vote = Approval(request=request, person=actor.person, approve=True, step=0, comment=comment, at=now)
        request.votes.append(vote)
        request.new_rows.append(vote)


def _vote(request: ApprovalRequest, actor: Actor, approve: bool, comment: str, now) -> Verdict:
    rule = ApprovalRule.parse(request.approval_rule)
    if request.escalation_level:
        rule = ApprovalRule()  # re-routed after a timeout: the first eligible decision decides
    step = rule.step(sum(1 for vote in request.votes if vote.approve))
    vote = Approval(request=request, person=actor.person, approve=approve, step=step, comment=comment, at=now)
    request.votes.append(vote)
    request.new_rows.append(vote)
    who = str(actor.person.pk)
    outcome = rule.outcome(
        [v.approve for v in request.votes], lambda: eligibility.approvals_still_possible(request, request.votes)
    )
    if outcome is None:
        event = "APPROVAL_RECORDED" if approve else "REJECTION_RECORDED"
        body = {"approve": approve, "person_id": who, "step": step, "comment": comment}
        return Verdict("recorded", [EventDraft(event, body, *actor.performer, now)])
    approvals = sum(1 for v in request.votes if v.approve)
    extra = {"approvals": approvals} if outcome == APPROVED and rule.type == N_OF_X else {}
    status = RequestStatus.APPROVED if outcome == APPROVED else RequestStatus.REJECTED
    return _close(request, status, who, actor.performer, now, comments=comment, extra=extra)


def _tweak(request: ApprovalRequest, actor: Actor, action: str, text: str, now) -> Verdict:
    open_tweak = next((t for t in request.open_tweaks if t.status == TweakStatus.OPEN), None)
    if action == "request_changes":
        if not text:
            raise Invalid("request_text: say what should change")
        if open_tweak is not None:
            raise Conflict("a change request is already open on this request")
        tweak = Tweak(id=uuid.uuid4(), request=request, request_text=text, requested_by=actor.person, created_at=now)
        request.open_tweaks.append(tweak)
        request.new_rows.append(tweak)
        body = {"tweak_id": str(tweak.pk), "request_text": text}
        return Verdict(
            "changes_requested",
            [EventDraft("TWEAK_REQUESTED", body, *actor.performer, now)],
            deliveries=[("tweak_requested", tweak_payload(request, tweak, "tweak_requested"))],
        )
    if open_tweak is None:
        raise Conflict("there is no open change request to withdraw")
    open_tweak.status, open_tweak.closed_at = TweakStatus.WITHDRAWN, now
    request.changed_tweaks.append(open_tweak)
    return Verdict(
        "changes_withdrawn",
        [EventDraft("TWEAK_WITHDRAWN", {"tweak_id": str(open_tweak.pk)}, *actor.performer, now)],
        deliveries=[("tweak_withdrawn", tweak_payload(request, open_tweak, "tweak_withdrawn"))],
    )


def original_ttl(request: ApprovalRequest):
    """The time the agent gave people, stored at submission."""
    ttl = request.ttl or ((request.expires_at - request.envelope.received_at) if request.expires_at else None)
    return max(ttl or MIN_ESCALATION_TTL, MIN_ESCALATION_TTL)


def _timeout(request: ApprovalRequest, now) -> Verdict:
    """``on_timeout`` of a pending request past its expiry: one rung up the escalate ladder
    with a fresh expiry, or the system's decision."""
    action = request.on_timeout or OnTimeout.EXPIRE
    expired_at = request.expires_at
    applied = {"on_timeout": action, "expires_at": expired_at, "escalation_level": request.escalation_level}
    level = request.next_escalation_level() if action == OnTimeout.ESCALATE else None
    if level is not None:
        expires_at = now + original_ttl(request)
        request.escalation_level, request.expires_at = level, expires_at
        event = {**applied, "outcome": "escalated", "new_escalation_level": level, "new_expires_at": expires_at}
        return Verdict("escalated", [EventDraft("TIMEOUT_APPLIED", event, *SYSTEM.performer, now)])
    status = TIMEOUT_STATUS[action]
    if action == OnTimeout.ESCALATE:
        reason = "timed out after escalating to the administrators: expired"
    else:
        reason = f"timed out at {rfc3339_isoformat(expired_at)}: on_timeout {action}"
    preceding = [EventDraft("TIMEOUT_APPLIED", {**applied, "outcome": status}, *SYSTEM.performer, now)]
    return _close(request, status, "system", SYSTEM.performer, now, comments=reason, preceding=preceding)


def _supersede(request: ApprovalRequest, actor: Actor, successor_id: str, now) -> Verdict:
    """The agent answered the open change request with a new card: the tweak is resolved and
    this card closes as superseded (no webhook: the agent made the move)."""
    tweak = next((t for t in request.open_tweaks if t.status == TweakStatus.OPEN), None)
    if tweak is None:
        return Verdict("unchanged")
    tweak.status, tweak.closed_at, tweak.resolved_by_id = TweakStatus.RESOLVED, now, successor_id
    request.changed_tweaks.append(tweak)
    resolved = EventDraft(
        "TWEAK_RESOLVED", {"tweak_id": str(tweak.pk), "successor_id": str(successor_id)}, *actor.performer, now
    )
    if request.status in FINAL_REQUEST_STATUSES:
        return Verdict("unchanged", [resolved])
    return _close(
        request,
        RequestStatus.EXPIRED,
        "system",
        actor.performer,
        now,
        comments=f"superseded by request {successor_id}",
        extra={"superseded_by": str(successor_id)},
        deliver=False,
        preceding=[resolved],
    )


# --- entries --------------------------------------------------------------------------------


def act(
    organization_id, request_id, person: Person, action: str, *, comment: str = "", choice=None, input_text: str = ""
) -> ApprovalRequest:
    """One person's action on a request, through the one decision path. Raises the
    refusal as a DomainError (Refused, Conflict, NotFound, Invalid)."""
    try:
        envelope_id = uuid.UUID(str(request_id))
    except ValueError:
        raise NotFound("request not found") from None
    try:
        outcome = decide(
            organization_id,
            envelope_id,
            Actor.of_person(person),
            Decision(action, comment=comment or "", choice=choice, input_text=input_text or ""),
            kind=EnvelopeKind.APPROVAL_REQUEST,
        )
    except NotFound:
        raise NotFound("request not found") from None
    return outcome.subject


def supersede(parent: ApprovalRequest, child: ApprovalRequest) -> None:
    """The agent's new card answers ``parent``'s open change request."""
    decide(
        parent.channel.organization_id,
        parent.pk,
        Actor.channel(parent.channel_id),
        Decision("supersede", detail={"successor_id": str(child.pk)}),
        kind=EnvelopeKind.APPROVAL_REQUEST,
    )


def apply_timeout(request: ApprovalRequest, now=None) -> str:
    """The system applies ``on_timeout`` to a due request; returns what happened
    (``escalated`` or the final status)."""
    outcome = decide(
        request.channel.organization_id,
        request.pk,
        SYSTEM,
        Decision("timeout"),
        kind=EnvelopeKind.APPROVAL_REQUEST,
        now=now,
    )
    return outcome.verdict.result


__all__ = [
    "RequestRules",
    "act",
    "apply_timeout",
    "decision_payload",
    "supersede",
    "tweak_payload",
]
