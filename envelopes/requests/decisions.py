"""People deciding agents' requests: who may act (routes, approval rules, separation of
duties), what each action does, and how the decision returns to the agent.

Every rule here is enforced for the API, the inbox and the timeout sweeper alike.

Approval rules:
- ``single``: the first eligible approval or rejection decides.
- ``sequential``: steps complete in order; only people named by the current step may act;
  the last step's approval approves; any rejection rejects.
- ``n_of_x``: ``required`` distinct approvals approve. A rejection is recorded; the request
  is rejected once the approvals still possible (eligible people who have not voted) can
  no longer reach ``required``.
"""

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from envelopes.choices import (
    FINAL_REQUEST_STATUSES,
    NO_DECISION_ROUTES,
    EnvelopeState,
    RequestStatus,
    RequestType,
    Route,
    TweakStatus,
)
from envelopes.models import Approval, ApprovalRequest, Envelope, Tweak
from envelopes.state import check_transition
from evidence.services.chain import EventDraft, append_events
from governance.api.authentication import person_roles
from governance.api.errors import APIError
from governance.choices import ROLE_IMPLIES, Role
from governance.models import Person, RoleAssignment, TeamMembership
from governance.timestamps import rfc3339_isoformat

APPROVER_ROLES = frozenset({Role.GOVERNANCE_APPROVER, Role.PLATFORM_ADMIN})


@dataclass(frozen=True)
class Refusal:
    code: str
    message: str


# --- who may act ------------------------------------------------------------------------


def _matches(entry: dict, person: Person, roles: frozenset[str]) -> bool:
    if "user" in entry:
        return entry["user"] == str(person.pk)
    if "team" in entry:
        return TeamMembership.objects.filter(team_id=entry["team"], person=person).exists()
    if "role" in entry:
        return entry["role"] in roles
    return False


# The ladder an ``escalate`` timeout climbs: the channel owner's manager, then any platform.admin.
MANAGER_LEVEL, ADMIN_LEVEL = 1, 2


def next_escalation_level(request: ApprovalRequest) -> int | None:
    """The rung a timed-out request escalates to; None once the admins have had it. An owner
    without a manager skips straight to the admins."""
    if request.escalation_level >= ADMIN_LEVEL:
        return None
    if request.escalation_level < MANAGER_LEVEL and request.channel.owner.manager_id:
        return MANAGER_LEVEL
    return ADMIN_LEVEL


def _in_route_pool(request: ApprovalRequest, person: Person, roles: frozenset[str]) -> bool:
    owner = request.channel.owner
    if request.escalation_level:
        # A timeout re-routed it: first to the owner's manager, then to any admin.
        if request.escalation_level == MANAGER_LEVEL and owner.manager_id:
            return person.pk == owner.manager_id
        return Role.PLATFORM_ADMIN in roles
    route = request.route
    if route in (Route.APPROVAL, Route.APPROVAL_SELF):
        return bool(roles & APPROVER_ROLES) or (route == Route.APPROVAL_SELF and person.pk == owner.pk)
    if route in (Route.APPROVE_MANAGER, Route.NOTIFY_MANAGER):
        return owner.manager_id is not None and person.pk == owner.manager_id
    if route == Route.APPROVE_TEAM:
        return TeamMembership.objects.filter(team_id=request.team_id, person=person).exists()
    if route == Route.NOTIFY_TEAM_OWNER:
        return TeamMembership.objects.filter(team_id=request.team_id, person=person, is_owner=True).exists()
    if route == Route.APPROVE_ANY_ADMIN:
        return Role.PLATFORM_ADMIN in roles
    return False  # log_only


def current_step(request: ApprovalRequest) -> int:
    return request.approvals.filter(approve=True).count() if request.approval_rule.get("type") == "sequential" else 0


def refusal(request: ApprovalRequest, person: Person, action: str = "approve") -> Refusal | None:
    """Why ``person`` may not take ``action`` on ``request`` now; None when they may."""
    if request.status in FINAL_REQUEST_STATUSES:
        when = request.decision_time.isoformat() if request.decision_time else "earlier"
        return Refusal("decided", f"already {request.status} by {request.decided_by or 'system'} at {when}")
    if person.organization_id != request.channel.organization_id:
        return Refusal("not_eligible", "this request belongs to another organization")
    if request.route == Route.LOG_ONLY:
        return Refusal("log_only", "log-only requests are recorded, not decided")
    owner = request.channel.owner
    if person.pk == owner.pk and request.route != Route.APPROVAL_SELF:
        return Refusal("separation_of_duties", "you own this agent: separation of duties")
    roles = person_roles(person)
    fyi = request.route in NO_DECISION_ROUTES or request.type == RequestType.INFORMATIONAL
    if fyi and action not in ("acknowledge",):
        return Refusal("fyi", "this card is for information: acknowledge it")
    if not fyi and action == "acknowledge":
        return Refusal("needs_decision", "this request needs a decision, not an acknowledgement")
    rule = request.approval_rule or {"type": "single"}
    if action in ("request_changes", "withdraw_tweak") and not request.tweak_allowed:
        return Refusal("no_tweaks", "the agent did not allow change requests on this request")
    # One vote per person and request, whatever the rule (a sequential step or an escalation
    # may name someone who already voted).
    if action in ("approve", "reject") and request.approvals.filter(person=person).exists():
        return Refusal("already_voted", "you have already voted on this request")
    if rule.get("type") == "n_of_x" and not request.escalation_level:
        if not any(_matches(e, person, roles) for e in rule["approvers"]):
            return Refusal("not_eligible", "you are not one of this request's approvers")
        return None
    if rule.get("type") == "sequential" and not request.escalation_level:
        steps = rule["steps"]
        step = current_step(request)
        if not any(_matches(e, person, roles) for e in steps[min(step, len(steps) - 1)]):
            return Refusal("not_your_step", f"step {step + 1} of {len(steps)} is for someone else")
        return None
    if not _in_route_pool(request, person, roles):
        return Refusal("not_eligible", "this route does not give you a say on this request")
    return None


def eligible_filter(person: Person) -> Q:
    """Requests that may need ``person`` (for inbox lists); ``refusal`` has the final word."""
    return Q(channel__organization_id=person.organization_id) & ~Q(route=Route.LOG_ONLY)


# --- what happens to the agent ----------------------------------------------------------


def snapshot(request: ApprovalRequest) -> dict:
    try:
        submitted = json.loads(request.envelope.submitted_raw)
    except ValueError:
        submitted = request.envelope.submitted_raw
    return submitted


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


def after_commit_notify(request: ApprovalRequest, event: str | None = None, payload: dict | None = None) -> None:
    """Wake long-poll waiters and, for decisions and tweak events, queue the webhook."""
    from envelopes.delivery import outbox
    from envelopes.requests import bus

    if event is not None:
        outbox.enqueue_delivery(request, event, payload)
    request_id = str(request.pk)
    transaction.on_commit(lambda: bus.publish(request_id))


# --- acting ------------------------------------------------------------------------------


def _record(request: ApprovalRequest, drafts: list[EventDraft]) -> None:
    envelope = request.envelope
    stored = append_events(str(envelope.pk), drafts)
    envelope.audit_event_ids = [*envelope.audit_event_ids, *(str(e.id) for e in stored)]
    envelope.final_event_hash = stored[-1].hash
    envelope.updated_at = timezone.now()
    envelope.save(update_fields=["audit_event_ids", "final_event_hash", "updated_at", "state", "closed_at"])


def _finalize(
    request: ApprovalRequest,
    status: str,
    decided_by: str,
    performer: tuple[str, str],
    *,
    comments: str = "",
    choice=None,
    input_text: str = "",
    extra: dict | None = None,
    deliver: bool = True,
    preceding: Sequence[EventDraft] = (),
) -> None:
    """Close a locked, pending request with ``status``: the one path every decision takes
    (people's, the agent's superseding card, the timeout sweeper's), so evidence, webhook
    and long-poll waiters always follow. ``preceding`` events are appended before it."""
    now = timezone.now()
    envelope = request.envelope
    envelope.state = check_transition(envelope.state, EnvelopeState.CLOSED)
    envelope.closed_at = now
    request.status, request.decided_by, request.decision_time = status, decided_by, now
    request.comments, request.choice, request.input_text = comments, choice, input_text
    request.save(update_fields=["status", "decided_by", "decision_time", "comments", "choice", "input_text"])
    # A change request still open when the request is decided has nothing left to change.
    request.tweaks.filter(status=TweakStatus.OPEN).update(status=TweakStatus.WITHDRAWN, closed_at=now)
    performer_type, performer_id = performer
    decision = {"status": status, "decided_by": decided_by, "comments": comments, **(extra or {})}
    if choice is not None:
        decision["choice"] = choice
    if input_text:
        decision["input"] = input_text
    _record(
        request,
        [
            *preceding,
            EventDraft("DECISION_RECORDED", decision, performer_type, performer_id, now),
            EventDraft("ENVELOPE_CLOSED", {"state": EnvelopeState.CLOSED}, performer_type, performer_id, now),
        ],
    )
    if deliver:
        after_commit_notify(request, "decision", decision_payload(request))
    else:
        after_commit_notify(request)


def _locked(organization_id, request_id) -> ApprovalRequest:
    try:
        request_uuid = uuid.UUID(str(request_id))
    except ValueError as exc:
        raise APIError(404, "request not found") from exc
    request = (
        ApprovalRequest.objects.select_for_update(of=("self",))
        .select_related("channel", "channel__owner", "envelope")
        .filter(pk=request_uuid, channel__organization_id=organization_id)
        .first()
    )
    if request is None:
        raise APIError(404, "request not found")
    # The envelope row is the chain's lock for appends outside the ledger head.
    request.envelope = Envelope.objects.select_for_update().get(pk=request.pk)
    return request


def _choice_value(request: ApprovalRequest, choice):
    options = (request.payload or {}).get("options") or []
    for option in options:
        value = option.get("id", option.get("label")) if isinstance(option, dict) else option
        if choice == value or (isinstance(option, dict) and choice == option.get("label")):
            return value
    raise APIError(400, "choice: not one of the request's options")


@transaction.atomic
def act(
    organization_id, request_id, person: Person, action: str, *, comment: str = "", choice=None, input_text: str = ""
) -> ApprovalRequest:
    """One person's action: approve, reject, acknowledge, choose, answer, request_changes,
    withdraw_tweak. Raises APIError (403/404/409/400) when not allowed."""
    request = _locked(organization_id, request_id)
    refused = refusal(request, person, action)
    if refused is not None:
        raise APIError(409 if refused.code == "decided" else 403, refused.message)
    who = str(person.pk)
    performer = ("user", person.get_username())
    comment = (comment or "").strip()

    if action == "acknowledge":
        _finalize(request, RequestStatus.ACKNOWLEDGED, who, performer, comments=comment)
    elif action in ("request_changes", "withdraw_tweak"):
        _tweak(request, person, action, comment)
    elif action == "choose":
        if request.type != RequestType.CHOICE:
            raise APIError(400, "choose: only choice requests have options")
        _finalize(
            request, RequestStatus.APPROVED, who, performer, comments=comment, choice=_choice_value(request, choice)
        )
    elif action == "answer":
        if request.type != RequestType.INPUT_REQUEST:
            raise APIError(400, "answer: only input requests take an answer")
        if not (input_text or "").strip():
            raise APIError(400, "input: the answer must not be empty")
        _finalize(request, RequestStatus.APPROVED, who, performer, comments=comment, input_text=input_text.strip())
    elif action in ("approve", "reject"):
        if request.type in (RequestType.CHOICE, RequestType.INPUT_REQUEST) and action == "approve":
            raise APIError(
                400, f"approve: a {request.type} is decided by {'choose' if request.type == 'choice' else 'answer'}"
            )
        _vote(request, person, action == "approve", comment, performer)
    else:
        raise APIError(400, f"unknown action {action!r}")
    return request


def _vote(request: ApprovalRequest, person: Person, approve: bool, comment: str, performer) -> None:
    rule = request.approval_rule or {"type": "single"}
    step = current_step(request)
    Approval.objects.create(request=request, person=person, approve=approve, step=step, comment=comment)
    who = str(person.pk)
    vote = {"approve": approve, "person_id": who, "step": step, "comment": comment}
    if not approve:
        if rule.get("type") == "n_of_x" and not request.escalation_level and _approvals_still_possible(request):
            _record(request, [EventDraft("REJECTION_RECORDED", vote, *performer)])
            after_commit_notify(request)
            return
        _finalize(request, RequestStatus.REJECTED, who, performer, comments=comment)
        return
    kind = rule.get("type")
    if request.escalation_level or kind == "single":
        _finalize(request, RequestStatus.APPROVED, who, performer, comments=comment)
    elif kind == "sequential":
        if step + 1 >= len(rule["steps"]):
            _finalize(request, RequestStatus.APPROVED, who, performer, comments=comment)
        else:
            _record(request, [EventDraft("APPROVAL_RECORDED", vote, *performer)])
            after_commit_notify(request)
    else:  # n_of_x
        approvals = request.approvals.filter(approve=True).count()
        if approvals >= rule["required"]:
            _finalize(request, RequestStatus.APPROVED, who, performer, comments=comment, extra={"approvals": approvals})
        else:
            _record(request, [EventDraft("APPROVAL_RECORDED", vote, *performer)])
            after_commit_notify(request)


def _roles_satisfying(role: str) -> set[str]:
    """The roles whose holders hold ``role`` (itself, and the roles implying it)."""
    return {role} | {held.value for held, implied in ROLE_IMPLIES.items() if role in implied}


def _named_people(organization_id, entries: list[dict]):
    """Everyone an approver list names, as one query (the set form of ``_matches``)."""
    users = [e["user"] for e in entries if "user" in e]
    teams = [e["team"] for e in entries if "team" in e]
    roles = set().union(*(_roles_satisfying(e["role"]) for e in entries if "role" in e))
    named = Q(pk__in=users)
    if teams:
        named |= Q(pk__in=TeamMembership.objects.filter(team_id__in=teams).values("person_id"))
    if roles:
        named |= Q(pk__in=RoleAssignment.objects.filter(role__in=roles).values("person_id")) | Q(is_superuser=True)
    return Person.objects.filter(named, organization_id=organization_id, is_active=True)


def _approvals_still_possible(request: ApprovalRequest) -> bool:
    """n_of_x: can the approvals given plus those of named people who have not voted yet
    still reach ``required``? (Constant queries, whatever the organization's size.)"""
    rule = request.approval_rule
    votes = list(request.approvals.values_list("person_id", "approve"))
    missing = rule["required"] - sum(1 for _, approve in votes if approve)
    if missing <= 0:
        return True
    candidates = _named_people(request.channel.organization_id, rule["approvers"]).exclude(
        pk__in=[person_id for person_id, _ in votes]
    )
    if request.route != Route.APPROVAL_SELF:
        candidates = candidates.exclude(pk=request.channel.owner_id)
    return candidates.count() >= missing


# --- the system acting (timeouts) ---------------------------------------------------------

SYSTEM = "system"
SYSTEM_PERFORMER = ("system", "mandate")


def system_decision(
    request: ApprovalRequest, status: str, reason: str, *, preceding: Sequence[EventDraft] = ()
) -> None:
    """The system decides a locked, pending request (a timeout's auto_approve, auto_reject or
    expire). Attributed to ``system``; the agent hears by webhook and long-poll as usual."""
    _finalize(request, status, SYSTEM, SYSTEM_PERFORMER, comments=reason, preceding=preceding)


def system_reroute(request: ApprovalRequest, level: int, expires_at, drafts: Sequence[EventDraft]) -> None:
    """A timeout moves a locked, pending request up the escalate ladder with a new expiry.
    No decision, so no webhook; waiters are woken and the inbox shows the new approvers."""
    request.escalation_level, request.expires_at = level, expires_at
    request.save(update_fields=["escalation_level", "expires_at"])
    _record(request, drafts)
    after_commit_notify(request)


# --- tweaks -------------------------------------------------------------------------------


def _tweak(request: ApprovalRequest, person: Person, action: str, text: str) -> None:
    performer = ("user", person.get_username())
    open_tweak = request.tweaks.select_for_update().filter(status=TweakStatus.OPEN).first()
    if action == "request_changes":
        if not text:
            raise APIError(400, "request_text: say what should change")
        if open_tweak is not None:
            raise APIError(409, "a change request is already open on this request")
        tweak = Tweak.objects.create(id=uuid.uuid4(), request=request, request_text=text, requested_by=person)
        payload = tweak_payload(request, tweak, "tweak_requested")
        _record(request, [EventDraft("TWEAK_REQUESTED", {"tweak_id": str(tweak.pk), "request_text": text}, *performer)])
        after_commit_notify(request, "tweak_requested", payload)
        return
    if open_tweak is None:
        raise APIError(409, "there is no open change request to withdraw")
    open_tweak.status, open_tweak.closed_at = TweakStatus.WITHDRAWN, timezone.now()
    open_tweak.save(update_fields=["status", "closed_at"])
    _record(request, [EventDraft("TWEAK_WITHDRAWN", {"tweak_id": str(open_tweak.pk)}, *performer)])
    after_commit_notify(request, "tweak_withdrawn", tweak_payload(request, open_tweak, "tweak_withdrawn"))


def resolve_tweak_by(parent: ApprovalRequest, child: ApprovalRequest) -> None:
    """The agent answered a change request with a new card: the tweak is resolved and the
    original card closes as superseded, linked to its successor in one history."""
    parent = _locked(parent.channel.organization_id, parent.pk)
    tweak = parent.tweaks.select_for_update().filter(status=TweakStatus.OPEN).first()
    if tweak is None:
        return
    tweak.status, tweak.closed_at, tweak.resolved_by = TweakStatus.RESOLVED, timezone.now(), child
    tweak.save(update_fields=["status", "closed_at", "resolved_by"])
    performer = ("channel", str(parent.channel_id))
    _record(
        parent, [EventDraft("TWEAK_RESOLVED", {"tweak_id": str(tweak.pk), "successor_id": str(child.pk)}, *performer)]
    )
    if parent.status not in FINAL_REQUEST_STATUSES:
        # The agent's new card replaces this one; the agent needs no webhook for its own move.
        _finalize(
            parent,
            RequestStatus.EXPIRED,
            "system",
            performer,
            comments=f"superseded by request {child.pk}",
            extra={"superseded_by": str(child.pk)},
            deliver=False,
        )
    else:
        after_commit_notify(parent)


def current_tweak_event(request: ApprovalRequest) -> dict | None:
    """While a change request is open, the long-poll answers with its event."""
    tweak = request.tweaks.filter(status=TweakStatus.OPEN).first()
    return tweak_payload(request, tweak, "tweak_requested") if tweak else None
