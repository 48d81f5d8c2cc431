"""Who may do what in the inbox: open it, decide escalations, see an agent's request, take
each action on a card (and why not). A service with no HTTP in it: every question takes a
``Viewer`` (the person, their organization and roles), so pages ask it now and an API later.

Deciding stays the core's business: its ``refusal`` (through ``deciding``) has the final
word on every action, and buttons built from these answers are hints.
"""

from dataclasses import dataclass

from django.db.models import Q

from envelopes.choices import (
    REVIEW_ROLES,
    EnvelopeKind,
    EnvelopeState,
    RequestStatus,
    RequestType,
    Route,
)
from envelopes.inbox.deciding import actor, escalation_refusal, held_action_refusal, request_refusal
from envelopes.models import Approval, ApprovalRequest, GateApproval, GateApprovalState, Tweak
from governance.choices import Role
from governance.errors import DomainError
from governance.models import Organization, Person
from governance.services.people import person_teams

# Who may read every waiting envelope of the organization: readers, and people who act on
# envelopes. Anyone else on staff sees the agents' requests that involve them.
INBOX_ROLES = frozenset({Role.PLATFORM_VIEWER, Role.GOVERNANCE_APPROVER, *REVIEW_ROLES})
# "Mine" asks ``refusal`` about each waiting request; past this many it looks at the oldest.
CANDIDATE_LIMIT = 500


@dataclass(frozen=True)
class Viewer:
    """The signed-in person, their organization and roles (read once per request)."""

    person: Person
    organization: Organization | None
    roles: frozenset

    @property
    def reads_all(self) -> bool:
        return bool(self.roles & INBOX_ROLES)

    @property
    def reviews(self) -> bool:
        return self.reads_all and bool(self.roles & set(REVIEW_ROLES))

    def actor(self, *, with_teams: bool = False):
        """The viewer as the core's decision path sees them; ``with_teams`` reads their teams
        now (one query), for many refusals in a row."""
        return actor(self.person, self.roles, person_teams(self.person) if with_teams else None)


def roles_text(names) -> str:
    return " or ".join(str(name) for name in names)


def _inbox_is_for() -> str:
    return f"The inbox is for people holding {roles_text(sorted(INBOX_ROLES))}"


def why_no_inbox() -> str:
    return f"{_inbox_is_for()}."


def why_limited(viewer: Viewer) -> str:
    """Why the viewer sees only some of the inbox ("" when they see all of it)."""
    if viewer.reads_all:
        return ""
    return (
        f"{_inbox_is_for()}; you see the agents' requests that involve you: routed to you, made by your agents, "
        "or acted on by you."
    )


# --- the console and the escalations ---------------------------------------------------------


def may_use_console(viewer: Viewer) -> bool:
    person = viewer.person
    return bool(
        person.is_authenticated
        and person.is_active
        and person.is_staff
        and (person.is_superuser or person.organization_id)
    )


def may_open_inbox(viewer: Viewer) -> bool:
    """May read every waiting envelope of the organization (and the envelope pages)."""
    return may_use_console(viewer) and viewer.reads_all


def may_review(viewer: Viewer) -> bool:
    return may_open_inbox(viewer) and bool(viewer.roles & set(REVIEW_ROLES))


def why_not_review(viewer: Viewer) -> str:
    held = sorted(viewer.roles & INBOX_ROLES)
    having = f"you hold {', '.join(held)}" if held else "you hold no governance role"
    return (
        f"Deciding escalations needs {roles_text(REVIEW_ROLES)}; {having}. Ask a platform admin for the reviewer role."
    )


# --- agents' requests --------------------------------------------------------------------------


def primary_action(approval: ApprovalRequest) -> str:
    if approval.is_fyi:
        return "acknowledge"
    return {RequestType.CHOICE: "choose", RequestType.INPUT_REQUEST: "answer"}.get(approval.type, "approve")


def action_names(approval: ApprovalRequest, open_tweak) -> list[str]:
    """The actions a card offers: its main one, and for decisions reject and a change request
    (or withdrawing the open one)."""
    if approval.is_fyi:
        return ["acknowledge"]
    return [primary_action(approval), "reject", "withdraw_tweak" if open_tweak else "request_changes"]


@dataclass(frozen=True)
class CardAction:
    """One action a card offers, and whether this person may take it now."""

    name: str
    refused: DomainError | None

    @property
    def allowed(self) -> bool:
        return self.refused is None

    @property
    def why_not(self) -> str:
        return self.refused.message if self.refused else ""


def card_actions(viewer: Viewer, approval: ApprovalRequest, open_tweak) -> list[CardAction]:
    who = viewer.actor()
    return [CardAction(name, request_refusal(approval, who, name)) for name in action_names(approval, open_tweak)]


def actionable(viewer: Viewer) -> dict[str, DomainError | None]:
    """For each waiting request that may need the viewer: why they may not take its main
    action now, or None when they may. ``refusal`` has the final word on every one.

    Three queries however many requests wait: the requests (with channel and owner), their
    votes, the viewer's teams; ``refusal`` then asks the database nothing."""
    person, organization = viewer.person, viewer.organization
    if organization is None or person.organization_id != organization.pk:
        return {}
    candidates = list(
        ApprovalRequest.objects.filter(
            channel__organization_id=person.organization_id,
            status=RequestStatus.PENDING,
            envelope__state=EnvelopeState.AWAITING_REVIEW,
        )
        .exclude(route=Route.LOG_ONLY)
        .select_related("channel__owner", "envelope")
        .prefetch_related("approvals")
        .order_by("envelope__created_at")[:CANDIDATE_LIMIT]
    )
    if not candidates:
        return {}
    who = viewer.actor(with_teams=True)
    return {str(approval.pk): request_refusal(approval, who, primary_action(approval)) for approval in candidates}


def escalation_refusals(viewer: Viewer, envelopes) -> dict[str, DomainError | None]:
    """For each escalated evaluation: why the viewer may not decide it now, or None when
    they may (the core's ``refusal``; no query)."""
    who = viewer.actor()
    return {
        str(envelope.pk): escalation_refusal(envelope, who)
        for envelope in envelopes
        if envelope.kind == EnvelopeKind.EVALUATION
    }


def held_action_refusals(viewer: Viewer) -> dict[str, DomainError | None]:
    """For each held action waiting for a person (the oldest ``CANDIDATE_LIMIT``): why the
    viewer may not decide it now, or None when they may (the core's ``refusal``: operators
    decide). One query however many wait; inbox readers only (nobody else sees them)."""
    organization = viewer.organization
    if organization is None or not viewer.reads_all:
        return {}
    candidates = (
        GateApproval.objects.filter(
            envelope__organization=organization,
            envelope__state=EnvelopeState.AWAITING_REVIEW,
            state=GateApprovalState.PENDING,
        )
        .only("envelope_id", "approval_id", "state", "expires_at")
        .order_by("created_at")[:CANDIDATE_LIMIT]
    )
    who = viewer.actor()
    return {str(approval.envelope_id): held_action_refusal(approval, who) for approval in candidates}


def involving(person) -> Q:
    """Requests a person without an inbox role may read: their agents' requests, and those
    they voted on, asked changes to or decided (the waiting ones they may act on are added
    from ``actionable``)."""
    return Q(kind=EnvelopeKind.APPROVAL_REQUEST) & (
        Q(approval_request__channel__owner=person)
        | Q(pk__in=Approval.objects.filter(person=person).values("request_id"))
        | Q(pk__in=Tweak.objects.filter(requested_by=person).values("request_id"))
        | Q(approval_request__decided_by=str(person.pk))
    )


def readable(viewer: Viewer, waiting, refusals: dict):
    """Of the ``waiting`` envelopes (a queryset), those the viewer may read: all of them with an
    inbox role; otherwise the requests that involve them and those ``refusals`` (from
    ``actionable``) let them act on."""
    if viewer.reads_all:
        return waiting
    mine = [pk for pk, refused in refusals.items() if refused is None]
    return waiting.filter(involving(viewer.person) | Q(pk__in=mine))


def may_see_request(viewer: Viewer, approval: ApprovalRequest) -> bool:
    if viewer.organization is None or approval.channel.organization_id != viewer.organization.pk:
        return False
    if viewer.reads_all:
        return True
    person = viewer.person
    if approval.channel.owner_id == person.pk or approval.decided_by == str(person.pk):
        return True
    if approval.approvals.filter(person=person).exists() or approval.tweaks.filter(requested_by=person).exists():
        return True
    return request_refusal(approval, viewer.actor(), primary_action(approval)) is None
