"""Who may take which action on an agent's request: routes, approval rules, separation of
duties, escalation (AIOS Govern). The one rule the inbox, ``/v1/reviews`` and the core's
decision path all ask (through ``envelopes.services.decide``)."""

from dataclasses import dataclass

from django.db.models import Q, QuerySet

from envelopes.approval_rules import ApprovalRule
from envelopes.choices import (
    APPROVER_ROLES,
    FINAL_REQUEST_STATUSES,
    MANAGER_LEVEL,
    Route,
)
from envelopes.models import ApprovalRequest
from governance.choices import ROLE_IMPLIES, Role
from governance.models import Person, RoleAssignment, TeamMembership
from governance.services.people import person_roles, person_teams

PERSON_ACTIONS = frozenset(
    {"approve", "reject", "acknowledge", "choose", "answer", "request_changes", "withdraw_tweak"}
)


@dataclass(frozen=True)
class Refusal:
    code: str
    message: str


class _Teams:
    """The person's teams ({team id: owns it}): as given, or read (one query) when first asked."""

    def __init__(self, person: Person, given):
        self.person, self.given = person, given

    def _all(self):
        if self.given is None:
            self.given = person_teams(self.person)
        return self.given

    def member(self, team_id) -> bool:
        return team_id is not None and str(team_id) in self._all()

    def owner(self, team_id) -> bool:
        return team_id is not None and bool(self._all().get(str(team_id)))


def _matches(entry: dict, person: Person, roles: frozenset[str], teams: _Teams) -> bool:
    if "user" in entry:
        return entry["user"] == str(person.pk)
    if "team" in entry:
        return teams.member(entry["team"])
    if "role" in entry:
        return entry["role"] in roles
    return False


def _in_route_pool(request: ApprovalRequest, person: Person, roles: frozenset[str], teams: _Teams) -> bool:
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
        return teams.member(request.team_id)
    if route == Route.NOTIFY_TEAM_OWNER:
        return teams.owner(request.team_id)
    if route == Route.APPROVE_ANY_ADMIN:
        return Role.PLATFORM_ADMIN in roles
    return False  # log_only


def votes_of(request: ApprovalRequest) -> list:
    """The request's votes, oldest first (prefetched where the caller loaded them)."""
    return list(request.approvals.all())


def refusal(
    request: ApprovalRequest, person: Person, action: str = "approve", *, roles=None, teams=None
) -> Refusal | None:
    """Why ``person`` (holding ``roles``, in ``teams`` ({team id: owns it}): read when not
    given) may not take ``action`` on ``request`` now; None when they may. With both given
    and the request's votes prefetched, it asks the database nothing."""
    if request.status in FINAL_REQUEST_STATUSES:
        when = request.decision_time.isoformat() if request.decision_time else "earlier"
        return Refusal("decided", f"already {request.status} by {request.decided_by or 'system'} at {when}")
    if person.organization_id != request.channel.organization_id:
        return Refusal("not_eligible", "this request belongs to another organization")
    if action not in PERSON_ACTIONS:
        return Refusal("unknown_action", f"unknown action {action!r}")
    if request.route == Route.LOG_ONLY:
        return Refusal("log_only", "log-only requests are recorded, not decided")
    owner = request.channel.owner
    if person.pk == owner.pk and request.route != Route.APPROVAL_SELF:
        return Refusal("separation_of_duties", "you own this agent: separation of duties")
    if roles is None:
        roles = person_roles(person)
    fyi = request.is_fyi
    if fyi and action != "acknowledge":
        return Refusal("fyi", "this card is for information: acknowledge it")
    if not fyi and action == "acknowledge":
        return Refusal("needs_decision", "this request needs a decision, not an acknowledgement")
    if action in ("request_changes", "withdraw_tweak") and not request.tweak_allowed:
        return Refusal("no_tweaks", "the agent did not allow change requests on this request")
    votes = votes_of(request)
    # One vote per person and request, whatever the rule (a sequential step or an escalation
    # may name someone who already voted).
    if action in ("approve", "reject") and any(vote.person_id == person.pk for vote in votes):
        return Refusal("already_voted", "you have already voted on this request")
    memberships = _Teams(person, teams)
    rule = ApprovalRule.parse(request.approval_rule)
    if rule.names_deciders and not request.escalation_level:
        approvals = sum(1 for vote in votes if vote.approve)
        if any(_matches(entry, person, roles, memberships) for entry in rule.eligible_entries(approvals)):
            return None
        if rule.type == "sequential":
            step = rule.step(approvals)
            return Refusal("not_your_step", f"step {step + 1} of {len(rule.steps)} is for someone else")
        return Refusal("not_eligible", "you are not one of this request's approvers")
    if not _in_route_pool(request, person, roles, memberships):
        return Refusal("not_eligible", "this route does not give you a say on this request")
    return None


def _roles_satisfying(role: str) -> set[str]:
    """The roles whose holders hold ``role`` (itself, and the roles implying it)."""
    return {role} | {held.value for held, implied in ROLE_IMPLIES.items() if role in implied}


def _named_people(organization_id, entries) -> QuerySet:
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


def approvals_still_possible(request: ApprovalRequest, votes) -> bool:
    """n_of_x: can the approvals given plus those of named people who have not voted yet
    still reach ``required``? (Constant queries, whatever the organization's size.)"""
    rule = ApprovalRule.parse(request.approval_rule)
    missing = rule.required - sum(1 for vote in votes if vote.approve)
    if missing <= 0:
        return True
    candidates = _named_people(request.channel.organization_id, rule.approvers).exclude(
        pk__in=[vote.person_id for vote in votes]
    )
    if request.route != Route.APPROVAL_SELF:
        candidates = candidates.exclude(pk=request.channel.owner_id)
    return candidates.count() >= missing
