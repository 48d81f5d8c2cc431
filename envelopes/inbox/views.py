"""The human inbox: every envelope waiting for a person — escalated evaluations and agents'
approval requests — as cards on the admin index; the review page where an evaluation is
decided, and the request page where an agent's request is.

Views here parse, authorize and render. Deciding is a service call: an escalation goes to
``envelopes.evaluation.reviews.review_envelope`` (what ``POST /v1/reviews`` calls), an agent's
request to ``envelopes.requests.decisions.act``, whose ``refusal`` is the one rule of who may
take which action (routes, approval rules, separation of duties). Buttons are hints: the
service decides, and when someone else decided first its refusal becomes a message naming
who decided and when.

Cards are built by ``card_for`` (evaluations) and ``request_card`` (agents' requests) into one
``InboxCard`` and rendered by one include (``admin/envelopes/inbox/card.html``).
"""

import json
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal, InvalidOperation
from urllib.parse import urlencode

from django import forms
from django.contrib import messages
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied
from django.db.models import (
    BooleanField,
    Case,
    CharField,
    Count,
    Exists,
    F,
    IntegerField,
    Max,
    OuterRef,
    Prefetch,
    Q,
    Subquery,
    Value,
    When,
    prefetch_related_objects,
)
from django.db.models.functions import Coalesce
from django.http import JsonResponse
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils import timezone
from django.utils.http import url_has_allowed_host_and_scheme

from controlplane.admin_views import console_organization, console_roles
from controlplane.models import Agent, Surface
from envelopes.choices import (
    NO_DECISION_ROUTES,
    EnvelopeKind,
    EnvelopeState,
    OnTimeout,
    ReasonCode,
    RequestStatus,
    RequestType,
    ReviewDecision,
    RiskLevel,
    Route,
    TweakStatus,
)
from envelopes.evaluation.reviews import REVIEW_ROLES, review_envelope
from envelopes.models import Approval, ApprovalRequest, Envelope, Tweak
from envelopes.representation import envelope_representation, submitted_raw
from envelopes.requests.decisions import (
    ADMIN_LEVEL,
    MANAGER_LEVEL,
    Refusal,
    act,
    eligible_filter,
    next_escalation_level,
    refusal,
)
from envelopes.services.integrity import IntegrityRecord, assess_chain, envelope_events
from envelopes.services.queries import NEWEST_FIRST
from governance.api.errors import APIError
from governance.choices import Role
from governance.models import Person, Team, TeamMembership

# Who may read every waiting envelope of the organization: readers, and people who act on
# envelopes. Anyone else on staff sees the agents' requests that involve them.
INBOX_ROLES = frozenset({Role.PLATFORM_VIEWER, Role.GOVERNANCE_APPROVER, *REVIEW_ROLES})
INBOX_PAGE_SIZE = 50
# "Mine" asks ``refusal`` about each waiting request; past this many it looks at the oldest.
CANDIDATE_LIMIT = 500
DECIDED_WINDOW = timedelta(days=7)
EXPIRES_SOON = timedelta(hours=1)

REASON_TITLES = {
    ReasonCode.CONFIDENCE_BELOW_THRESHOLD: "Confidence below threshold",
    ReasonCode.CONSEQUENCE_EXCEEDS_LIMIT: "Consequence exceeds the limit",
    ReasonCode.POLICY_DENY: "Denied by policy",
    ReasonCode.POLICY_ERROR: "Policy could not be evaluated",
}

KIND_LABELS = {
    EnvelopeKind.EVALUATION: "Escalated evaluation",
    EnvelopeKind.APPROVAL_REQUEST: "Approval request",
    EnvelopeKind.ACTION: "Held action",
}

TYPE_LABELS = {
    RequestType.APPROVAL_REQUEST: "Approval request",
    RequestType.INFORMATIONAL: "For your information",
    RequestType.PERMISSION_ELEVATION: "Permission elevation",
    RequestType.ESCALATION: "Escalation",
    RequestType.REVIEW_REQUEST: "Review request",
    RequestType.POLL_REQUEST: "Poll",
    RequestType.CHOICE: "Choice",
    RequestType.INPUT_REQUEST: "Input request",
    RequestType.SPEND_APPROVAL: "Spend approval",
}

ROUTE_TEXTS = {
    Route.LOG_ONLY: "Log only: recorded, nobody decides.",
    Route.APPROVAL: "Any approver in the organization except the channel's owner (separation of duties).",
    Route.APPROVAL_SELF: "Approvers in the organization, and the channel's owner.",
    Route.APPROVE_MANAGER: "The channel owner's manager.",
    Route.APPROVE_TEAM: "Members of the team",
    Route.APPROVE_ANY_ADMIN: "Any platform admin.",
    Route.NOTIFY_MANAGER: "For the owner's manager to acknowledge (also emailed).",
    Route.NOTIFY_TEAM_OWNER: "For the team's owners to acknowledge (also emailed).",
}

RISK_RANK = {RiskLevel.CRITICAL: 4, RiskLevel.HIGH: 3, RiskLevel.MEDIUM: 2, RiskLevel.LOW: 1}

STATUS_LABELS = {
    RequestStatus.PENDING: "Waiting",
    RequestStatus.APPROVED: "Approved",
    RequestStatus.REJECTED: "Rejected",
    RequestStatus.ACKNOWLEDGED: "Acknowledged",
    RequestStatus.EXPIRED: "Expired",
}


def _roles(names) -> str:
    return " or ".join(str(name) for name in names)


# --- who and where -------------------------------------------------------------------------


def may_use_console(request) -> bool:
    user = request.user
    return bool(
        user.is_authenticated and user.is_active and user.is_staff and (user.is_superuser or user.organization_id)
    )


def may_open_inbox(request) -> bool:
    """May read every waiting envelope of the organization (and the envelope pages)."""
    return may_use_console(request) and bool(console_roles(request) & INBOX_ROLES)


def may_review(request) -> bool:
    return may_open_inbox(request) and bool(console_roles(request) & set(REVIEW_ROLES))


def why_not_review(request) -> str:
    held = sorted(console_roles(request) & INBOX_ROLES)
    having = f"you hold {', '.join(held)}" if held else "you hold no governance role"
    return f"Deciding escalations needs {_roles(REVIEW_ROLES)}; {having}. Ask a platform admin for the reviewer role."


def pending_envelopes(organization):
    """Envelopes of the organization waiting for a person, newest first."""
    return Envelope.objects.filter(organization=organization, state=EnvelopeState.AWAITING_REVIEW).order_by(
        *NEWEST_FIRST
    )


def review_url(envelope_id) -> str:
    return reverse("admin:envelopes_envelope_review", args=[envelope_id])


def request_url(request_id) -> str:
    return reverse("admin:envelopes_approvalrequest_change", args=[request_id])


def card_url(envelope) -> str:
    return request_url(envelope.pk) if envelope.kind == EnvelopeKind.APPROVAL_REQUEST else review_url(envelope.pk)


@dataclass
class Viewer:
    """The signed-in person, their organization and roles (read once per request)."""

    person: Person
    organization: object
    roles: frozenset

    @classmethod
    def of(cls, request) -> "Viewer":
        return cls(request.user, console_organization(request), console_roles(request))

    @property
    def reads_all(self) -> bool:
        return bool(self.roles & INBOX_ROLES)

    @property
    def reviews(self) -> bool:
        return self.reads_all and bool(self.roles & set(REVIEW_ROLES))


def person_label(person) -> str:
    if person is None:
        return ""
    full = person.get_full_name()
    return f"{full} ({person.username})" if full else person.username


# --- agents' requests: what this person may do ------------------------------------------


def is_fyi(approval: ApprovalRequest) -> bool:
    """Cards to acknowledge rather than decide (as ``decisions.refusal`` treats them)."""
    return approval.route in NO_DECISION_ROUTES or approval.type == RequestType.INFORMATIONAL


def primary_action(approval: ApprovalRequest) -> str:
    if is_fyi(approval):
        return "acknowledge"
    return {RequestType.CHOICE: "choose", RequestType.INPUT_REQUEST: "answer"}.get(approval.type, "approve")


def actionable(person, organization) -> dict[str, Refusal | None]:
    """For each waiting request that may need ``person``: why they may not take its main
    action now, or None when they may. ``refusal`` has the final word on every one."""
    if organization is None or person.organization_id != organization.pk:
        return {}
    candidates = (
        ApprovalRequest.objects.filter(
            eligible_filter(person), status=RequestStatus.PENDING, envelope__state=EnvelopeState.AWAITING_REVIEW
        )
        .select_related("channel__owner", "envelope")
        .order_by("envelope__created_at")[:CANDIDATE_LIMIT]
    )
    return {str(approval.pk): refusal(approval, person, primary_action(approval)) for approval in candidates}


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


def team_scope(person) -> Q:
    """ "My team": requests routed to one of my teams, or made by agents of my teammates, of
    my reports or of mine."""
    my_teams = TeamMembership.objects.filter(person=person).values("team_id")
    teammates = TeamMembership.objects.filter(team_id__in=my_teams).values("person_id")
    return Q(kind=EnvelopeKind.APPROVAL_REQUEST) & (
        Q(approval_request__team_id__in=my_teams)
        | Q(approval_request__channel__owner_id__in=teammates)
        | Q(approval_request__channel__owner=person)
        | Q(approval_request__channel__owner__manager=person)
    )


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
    return refusal(approval, person, primary_action(approval)) is None


# --- presenting values ---------------------------------------------------------------------


def amount_text(amount) -> str:
    try:
        value = Decimal(str(amount))
    except (InvalidOperation, ValueError):
        return str(amount)
    return f"{value:,.0f}" if value == value.to_integral_value() else f"{value:,.2f}"


def consequence_text(consequence) -> str:
    """A consequence as a person says it: ``GBP 20,000`` or ``high risk``."""
    if not consequence:
        return ""
    if not isinstance(consequence, dict):
        return str(consequence)
    if consequence.get("type") == "monetary":
        return f"{consequence.get('currency') or '(no currency)'} {amount_text(consequence.get('amount', 0))}"
    if consequence.get("type") == "risk_rating":
        return f"{consequence.get('risk_rating') or 'unrated'} risk"
    return json.dumps(consequence, sort_keys=True)


def spend_text(approval: ApprovalRequest) -> str:
    payload = approval.payload if isinstance(approval.payload, dict) else {}
    if approval.type != RequestType.SPEND_APPROVAL or "amount" not in payload:
        return ""
    return f"{payload.get('currency') or ''} {amount_text(payload['amount'])}".strip()


def number_text(value) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return "—" if value is None else str(value)
    return f"{value:.2f}".rstrip("0").rstrip(".") if value % 1 else str(int(value))


def reason_title(code: str) -> str:
    if not code:
        return "Waiting for review"
    return REASON_TITLES.get(code) or code.replace("_", " ").capitalize()


def type_label(approval: ApprovalRequest) -> str:
    label = TYPE_LABELS.get(approval.type, approval.type)
    if approval.route in NO_DECISION_ROUTES and approval.type != RequestType.INFORMATIONAL:
        return f"FYI · {label}"
    return label


@dataclass
class Fact:
    label: str
    value: str
    detail: str = ""  # a second line: the limit, the threshold
    alert: bool = False  # this fact is why the envelope waits
    quiet: bool = False  # background detail: on the review page, not on the card
    code: bool = False  # an identifier, shown monospaced


@dataclass
class Meter:
    """A value against its threshold on a 0..1 scale (confidence)."""

    value: float
    threshold: float

    @property
    def value_percent(self) -> int:
        return round(max(0.0, min(1.0, self.value)) * 100)

    @property
    def threshold_percent(self) -> int:
        return round(max(0.0, min(1.0, self.threshold)) * 100)

    @property
    def below(self) -> bool:
        return self.value < self.threshold


@dataclass
class Hints:
    """An agent's presentation hints for its card. They style the card; they never replace
    the risk level, which every card shows in words."""

    bg_color: str = ""
    tone: str = ""  # "dark" or "light": which text colours read on bg_color
    badge: str = ""
    urgent: bool = False
    accent: str = ""
    pulse: str = ""
    top: bool = False

    @classmethod
    def of(cls, approval: ApprovalRequest) -> "Hints":
        badge = (approval.badge or "").strip()
        return cls(
            bg_color=approval.bg_color,
            tone=background_tone(approval.bg_color),
            badge=badge,
            urgent=badge.upper() == "URGENT",
            accent=approval.accent_bar,
            pulse=approval.pulse if approval.pulse in ("light", "strong") else "",
            top=approval.top_sort,
        )


def background_tone(color: str) -> str:
    """ "dark" when light text reads better on ``color`` (#rrggbb), "light" when dark text does."""
    if not color or len(color) != 7:
        return ""
    try:
        channels = [int(color[i : i + 2], 16) / 255 for i in (1, 3, 5)]
    except ValueError:
        return ""
    linear = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
    luminance = 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]
    # WCAG contrast against white vs. against near-black text.
    return "dark" if 1.05 / (luminance + 0.05) > (luminance + 0.05) / 0.05 else "light"


@dataclass
class Clock:
    """When a request expires and what happens then."""

    expires_at: datetime
    overdue: bool
    soon: bool
    then: str


def timeout_consequence(approval: ApprovalRequest) -> str:
    if approval.on_timeout == OnTimeout.ESCALATE:
        level = next_escalation_level(approval)
        if level == MANAGER_LEVEL:
            return "then it goes to the owner's manager"
        if level == ADMIN_LEVEL:
            return "then it goes to the platform admins"
        return "then it expires unanswered"
    return {
        OnTimeout.AUTO_APPROVE: "then it is approved automatically",
        OnTimeout.AUTO_REJECT: "then it is rejected automatically",
        OnTimeout.EXPIRE: "then it expires unanswered",
    }.get(approval.on_timeout, "then it expires unanswered")


def clock_of(approval: ApprovalRequest, now: datetime) -> Clock | None:
    if approval.expires_at is None:
        return None
    left = approval.expires_at - now
    return Clock(approval.expires_at, left.total_seconds() <= 0, left <= EXPIRES_SOON, timeout_consequence(approval))


@dataclass
class InboxCard:
    """What one waiting envelope looks like in the inbox, whatever its kind."""

    id: str
    url: str
    kind_label: str
    title: str
    summary: str
    who: str  # who asks (the agent)
    who_detail: str
    where: str  # through what (the surface, or the agent's channel)
    where_detail: str
    risk: str
    facts: list[Fact] = field(default_factory=list)
    meter: Meter | None = None
    created_at: datetime | None = None
    parties: list[Fact] = field(default_factory=list)  # who asks, through what, whose
    type_code: str = "evaluation"
    hints: Hints = field(default_factory=Hints)
    clock: Clock | None = None
    progress: str = ""
    note: str = ""  # the card's state in words ("Changes requested: waiting for the agent")
    may_act: bool | None = None  # None: not asked (escalations: see the inbox's may_review)
    why_not: str = ""
    fyi: bool = False
    outcome: str = ""  # decided cards: "Approved by alice"
    decided_at: datetime | None = None


@dataclass
class Declarations:
    """Names and risk tiers of the surfaces and agents the cards mention (two queries)."""

    surfaces: dict = field(default_factory=dict)  # (key, version) and key -> (name, risk_tier)
    agents: dict = field(default_factory=dict)  # key -> (name, owner)

    @classmethod
    def for_envelopes(cls, organization, envelopes) -> "Declarations":
        found = cls()
        surface_keys = {e.surface_id for e in envelopes if e.surface_id}
        agent_keys = {e.agent_id for e in envelopes if e.agent_id}
        if surface_keys:
            rows = Surface.objects.filter(organization=organization, key__in=surface_keys).order_by("version")
            for key, version, name, risk in rows.values_list("key", "version", "name", "risk_tier"):
                found.surfaces[(key, version)] = found.surfaces[key] = (name, risk)
        if agent_keys:
            rows = Agent.objects.filter(organization=organization, key__in=agent_keys)
            found.agents = {key: (name, owner) for key, name, owner in rows.values_list("key", "name", "owner")}
        return found

    def surface(self, envelope) -> tuple[str, str]:
        return self.surfaces.get((envelope.surface_id, envelope.surface_version)) or self.surfaces.get(
            envelope.surface_id, ("", "")
        )

    def agent(self, envelope) -> tuple[str, str]:
        return self.agents.get(envelope.agent_id, ("", ""))


def evaluation_facts(envelope) -> tuple[list[Fact], Meter | None]:
    """The stake of an evaluation: its consequence against the limit, its confidence against
    the threshold."""
    explanation = envelope.explanation or {}
    reason = envelope.reason_code
    provided = explanation.get("consequence_provided")
    limit = explanation.get("consequence_threshold")
    facts = [
        Fact(
            "Consequence",
            consequence_text(provided) or "none stated",
            f"limit {consequence_text(limit)}" if limit else "no limit set",
            alert=reason == ReasonCode.CONSEQUENCE_EXCEEDS_LIMIT,
        )
    ]
    meter = None
    confidence, threshold = explanation.get("confidence_provided"), explanation.get("confidence_threshold")
    if isinstance(confidence, int | float) and isinstance(threshold, int | float):
        meter = Meter(float(confidence), float(threshold))
    facts.append(
        Fact(
            "Confidence",
            number_text(confidence),
            f"threshold {number_text(threshold)}" if threshold is not None else "",
            alert=reason == ReasonCode.CONFIDENCE_BELOW_THRESHOLD,
        )
    )
    if explanation.get("policy_reference"):
        verdict = {ReasonCode.POLICY_DENY: "denied", ReasonCode.POLICY_ERROR: "error (fails closed)"}.get(reason)
        policy_state = "not reached"
        if explanation.get("policy_evaluated"):
            policy_state = "error (fails open)" if explanation.get("policy_error") else "allowed"
        facts.append(
            Fact(
                "Policy",
                explanation["policy_reference"],
                verdict or policy_state,
                alert=bool(verdict),
                quiet=not verdict,
            )
        )
    return facts, meter


def card_for(envelope, declarations: Declarations) -> InboxCard:
    surface_name, risk = declarations.surface(envelope)
    agent_name, owner = declarations.agent(envelope)
    facts, meter = evaluation_facts(envelope)
    who_detail = " · ".join(part for part in (agent_name, f"owner {owner}" if owner else "") if part)
    where_detail = " · ".join(
        part for part in (surface_name, f"v{envelope.surface_version}" if envelope.surface_version else "") if part
    )
    card = InboxCard(
        id=str(envelope.id),
        url=review_url(envelope.id),
        kind_label=KIND_LABELS.get(envelope.kind, envelope.kind),
        title=reason_title(envelope.reason_code),
        summary=(envelope.response or {}).get("explanation", ""),
        who=envelope.agent_id,
        who_detail=who_detail,
        where=envelope.surface_id,
        where_detail=where_detail,
        risk=risk,
        facts=facts,
        meter=meter,
        created_at=envelope.created_at,
        parties=[
            Fact("Agent", envelope.agent_id or "—", who_detail, code=True),
            Fact("Surface", envelope.surface_id or "—", where_detail, code=True),
        ],
    )
    if envelope.review_decision:
        card.outcome = f"{envelope.review_decision.capitalize()} by {envelope.reviewer_id}"
        card.decided_at = envelope.reviewed_at
    return card


# --- approval rules' progress -----------------------------------------------------------


def _votes(approval: ApprovalRequest) -> list:
    return list(approval.approvals.all())  # prefetched on the inbox's cards


def progress_line(approval: ApprovalRequest) -> str:
    """The approval rule's progress in a few words, for a card."""
    if is_fyi(approval):
        return ""
    rule = approval.approval_rule or {}
    votes = _votes(approval)
    approvals = sum(1 for v in votes if v.approve)
    rejections = len(votes) - approvals
    if approval.escalation_level:
        return "re-routed after timeout"
    if rule.get("type") == "n_of_x":
        text = f"{approvals} of {rule.get('required')} approvals"
        return f"{text} · {rejections} rejected" if rejections else text
    if rule.get("type") == "sequential":
        steps = len(rule.get("steps") or [])
        return f"step {min(approvals + 1, steps)} of {steps}"
    return ""


class Names:
    """People and teams an approval rule names, by id (two queries at most)."""

    def __init__(self, people: dict, teams: dict):
        self.people, self.teams = people, teams

    @classmethod
    def for_rules(cls, rules, extra_people=()) -> "Names":
        users, teams = set(extra_people), set()
        for rule in rules:
            entries = list(rule.get("approvers") or [])
            for step in rule.get("steps") or []:
                entries.extend(step)
            for entry in entries:
                if isinstance(entry, dict) and "user" in entry:
                    users.add(entry["user"])
                elif isinstance(entry, dict) and "team" in entry:
                    teams.add(entry["team"])
        valid = [u for u in users if is_uuid(u)]
        people = {str(p.pk): person_label(p) for p in Person.objects.filter(pk__in=valid)} if valid else {}
        valid_teams = [t for t in teams if is_uuid(t)]
        names = {str(t.pk): t.name for t in Team.objects.filter(pk__in=valid_teams)} if valid_teams else {}
        return cls(people, names)

    def entry(self, entry) -> str:
        if "user" in entry:
            return self.people.get(entry["user"], entry["user"])
        if "team" in entry:
            return f"team {self.teams.get(entry['team'], entry['team'])}"
        if "role" in entry:
            return f"anyone with {entry['role']}"
        return json.dumps(entry)

    def person(self, person_id) -> str:
        return self.people.get(str(person_id), str(person_id))


def is_uuid(value) -> bool:
    try:
        uuid.UUID(str(value))
    except ValueError:
        return False
    return True


# --- agents' requests as cards ------------------------------------------------------------


def request_card(envelope, declarations: Declarations, refused, now: datetime, names: Names | None = None):
    """An agent's request as a card. ``refused``: the viewer's refusal for its main action
    (None: they may act; ``...``: not asked, e.g. a decided card)."""
    approval = envelope.approval_request
    channel = approval.channel
    agent_name, _ = declarations.agent(envelope)
    owner = person_label(channel.owner)
    facts = []
    amount = spend_text(approval)
    if amount:
        facts.append(Fact("Amount", amount, alert=True))
    card = InboxCard(
        id=str(envelope.id),
        url=request_url(envelope.id),
        kind_label=type_label(approval),
        title=approval.title,
        summary=approval.summary,
        who=envelope.agent_id,
        who_detail=agent_name,
        where=channel.name,
        where_detail=f"owner {owner}",
        risk=approval.risk_level,
        facts=facts,
        created_at=envelope.created_at,
        parties=[
            *([Fact("Agent", envelope.agent_id, agent_name, code=True)] if envelope.agent_id else []),
            Fact("Channel", channel.name, f"owner {owner}"),
        ],
        type_code=approval.type,
        hints=Hints.of(approval),
        fyi=is_fyi(approval),
    )
    if approval.status == RequestStatus.PENDING:
        card.clock = clock_of(approval, now)
        card.progress = progress_line(approval)
        if getattr(approval, "open_tweaks", None):
            card.note = "Changes requested: waiting for the agent's new version"
        if refused is not ...:
            card.may_act = refused is None
            card.why_not = refused.message if refused is not None else ""
    else:
        who = "the system" if approval.decided_by in ("", "system") else approval.decided_by
        if names is not None and who != "the system":
            who = names.person(who)
        card.outcome = f"{STATUS_LABELS.get(approval.status, approval.status)} by {who}"
        card.decided_at = approval.decision_time
    return card


# --- the inbox -----------------------------------------------------------------------------

SCOPES = (("all", "All"), ("mine", "Mine"), ("team", "My team"))
STATES = (
    ("", "Waiting"),
    ("decide", "Needs a decision"),
    ("fyi", "FYI to acknowledge"),
    ("changes", "Changes requested"),
    ("decided", "Decided, last 7 days"),
)
SORTS = (("", "Priority"), ("newest", "Newest first"), ("oldest", "Oldest first"), ("expiring", "Expiring soonest"))
TYPES = (("evaluation", "Escalated evaluation"), *((value, TYPE_LABELS[value]) for value in RequestType.values))
RISKS = tuple((level, level) for level in RiskLevel.values)


def _one_of(value: str, choices) -> str:
    return value if value in {code for code, _ in choices} else ""


@dataclass
class InboxFilters:
    """The inbox's filters, kept in the URL so a link shares the view."""

    scope: str = "all"
    type: str = ""
    risk: str = ""
    channel: str = ""
    agent: str = ""
    surface: str = ""
    reason: str = ""
    state: str = ""
    sort: str = ""

    @classmethod
    def from_query(cls, query) -> "InboxFilters":
        channel = query.get("channel", "").strip()
        return cls(
            scope=_one_of(query.get("scope", "").strip(), SCOPES) or "all",
            type=_one_of(query.get("type", "").strip(), TYPES),
            risk=_one_of(query.get("risk", "").strip(), RISKS),
            channel=channel if is_uuid(channel) else "",
            agent=query.get("agent", "").strip()[:255],
            surface=query.get("surface", "").strip()[:255],
            reason=query.get("reason", "").strip()[:60],
            state=_one_of(query.get("state", "").strip(), STATES),
            sort=_one_of(query.get("sort", "").strip(), SORTS),
        )

    @property
    def oldest_first(self) -> bool:
        return self.sort == "oldest"

    @property
    def active(self) -> bool:
        return bool(self.type or self.risk or self.channel or self.agent or self.surface or self.reason or self.state)

    def query(self, **changes) -> str:
        values = {**self.__dict__, **changes}
        if values.get("scope") == "all":
            values["scope"] = ""
        return "?" + urlencode({key: value for key, value in values.items() if value})

    @property
    def clear_query(self) -> str:
        return "?" if self.scope == "all" else f"?scope={self.scope}"

    def scope_links(self, counts: dict) -> list[dict]:
        return [
            {"code": code, "label": label, "count": counts.get(code), "url": self.query(scope=code)}
            for code, label in SCOPES
        ]

    def apply(self, queryset):
        if self.type == "evaluation":
            queryset = queryset.filter(kind=EnvelopeKind.EVALUATION)
        elif self.type:
            queryset = queryset.filter(approval_request__type=self.type)
        if self.risk:
            queryset = queryset.filter(risk=self.risk)
        if self.channel:
            queryset = queryset.filter(approval_request__channel_id=self.channel)
        if self.agent:
            queryset = queryset.filter(agent_id=self.agent)
        if self.surface:
            queryset = queryset.filter(surface_id=self.surface)
        if self.reason:
            queryset = queryset.filter(reason_code=self.reason)
        if self.state in ("decide", "fyi", "changes"):
            fyi = Q(approval_request__route__in=NO_DECISION_ROUTES) | Q(
                approval_request__type=RequestType.INFORMATIONAL
            )
            open_tweak = Exists(Tweak.objects.filter(request_id=OuterRef("pk"), status=TweakStatus.OPEN))
            if self.state == "fyi":
                queryset = queryset.filter(fyi)
            elif self.state == "changes":
                queryset = queryset.filter(open_tweak)
            else:
                queryset = queryset.filter(
                    Q(kind=EnvelopeKind.EVALUATION) | (Q(kind=EnvelopeKind.APPROVAL_REQUEST) & ~fyi & ~open_tweak)
                )
        return queryset

    def order(self, queryset):
        if self.state == "decided":
            return queryset.order_by(F("closed_at").desc(nulls_last=True), "-id")
        if self.sort == "newest":
            return queryset.order_by(*NEWEST_FIRST)
        if self.sort == "oldest":
            return queryset.order_by("created_at", "id")
        if self.sort == "expiring":
            return queryset.order_by(F("approval_request__expires_at").asc(nulls_last=True), "created_at", "id")
        # Priority: what the agent pinned, then the stake, then what has waited longest.
        return queryset.order_by("-top", "-risk_rank", "created_at", "id")


def with_risk(queryset):
    """Each envelope's risk (the request's level, or the escalated surface's tier), its rank and
    whether it is pinned to the top — in the same query."""
    surface_risk = Subquery(
        Surface.objects.filter(
            organization_id=OuterRef("organization_id"), key=OuterRef("surface_id"), version=OuterRef("surface_version")
        ).values("risk_tier")[:1]
    )
    queryset = queryset.annotate(
        risk=Coalesce(F("approval_request__risk_level"), surface_risk, Value(""), output_field=CharField()),
        top=Coalesce(F("approval_request__top_sort"), Value(False), output_field=BooleanField()),
    )
    return queryset.annotate(
        risk_rank=Case(
            *(When(risk=level, then=Value(rank)) for level, rank in RISK_RANK.items()),
            default=Value(0),
            output_field=IntegerField(),
        )
    )


def decided_envelopes(organization, now):
    """Envelopes a person decided (or that timed out) in the last week."""
    waited = Q(kind=EnvelopeKind.APPROVAL_REQUEST) & ~Q(approval_request__route=Route.LOG_ONLY)
    reviewed = Q(kind=EnvelopeKind.EVALUATION) & ~Q(review_decision="")
    return Envelope.objects.filter(
        waited | reviewed,
        organization=organization,
        state=EnvelopeState.CLOSED,
        closed_at__gte=now - DECIDED_WINDOW,
    )


def version_of(count: int, latest) -> str:
    """What the live endpoint and the page compare: the waiting count and the last change."""
    return f"{count}.{int(latest.timestamp() * 1_000_000) if latest else 0}"


def inbox_version(organization) -> str:
    totals = pending_envelopes(organization).order_by().aggregate(n=Count("id"), latest=Max("updated_at"))
    return version_of(totals["n"], totals["latest"])


def envelope_version(envelope) -> str:
    return f"{envelope.state}.{int(envelope.updated_at.timestamp() * 1_000_000)}"


def _decided_by_me(person) -> Q:
    return (
        Q(approval_request__decided_by=str(person.pk))
        | Q(reviewer_id=person.get_username())
        | Q(pk__in=Approval.objects.filter(person=person).values("request_id"))
        | Q(pk__in=Tweak.objects.filter(requested_by=person).values("request_id"))
    )


def inbox_context(request) -> dict:
    """The ``inbox`` the admin index renders. Escalations alone read in five queries however
    many there are; agents' requests add one ``refusal`` per waiting request (for "mine")."""
    if not may_use_console(request):
        return {"inbox": {"visible": False, "why": f"The inbox is for people holding {_roles(sorted(INBOX_ROLES))}."}}
    viewer = Viewer.of(request)
    organization = viewer.organization
    filters = InboxFilters.from_query(request.GET)
    now = timezone.now()
    inbox = {
        "visible": True,
        "organization": organization,
        "filters": filters,
        "reads_all": viewer.reads_all,
        "may_review": viewer.reviews,
        "why_limited": ""
        if viewer.reads_all
        else f"The inbox is for people holding {_roles(sorted(INBOX_ROLES))}; "
        "you see the agents' requests that involve you: routed to you, made by your agents, or acted on by you.",
        "cards": [],
        "total": 0,
        "scopes": filters.scope_links({}),
        "states": STATES,
        "sorts": SORTS,
        "types": TYPES,
        "risks": RISKS,
        "live_url": reverse("admin:envelopes_inbox_live"),
        "acknowledge_url": reverse("admin:envelopes_inbox_acknowledge"),
    }
    if organization is None:
        return {"inbox": inbox}
    person = viewer.person
    pending = with_risk(pending_envelopes(organization))

    refusals: dict | None = None
    if viewer.reads_all:
        visible = pending
    else:
        refusals = actionable(person, organization)
        mine = [pk for pk, refused in refusals.items() if refused is None]
        visible = pending.filter(involving(person) | Q(pk__in=mine))
    groups = list(
        visible.order_by()
        .values(
            "kind",
            "agent_id",
            "surface_id",
            "reason_code",
            "approval_request__type",
            "approval_request__channel_id",
            "approval_request__channel__name",
        )
        .annotate(n=Count("id"), latest=Max("updated_at"))
    )
    total = sum(group["n"] for group in groups)
    inbox["total"] = total
    inbox["version"] = (
        version_of(total, max((g["latest"] for g in groups), default=None))
        if viewer.reads_all
        else inbox_version(organization)
    )
    has_requests = any(g["kind"] == EnvelopeKind.APPROVAL_REQUEST for g in groups)
    if refusals is None and has_requests:
        refusals = actionable(person, organization)
    refusals = refusals or {}
    mine_ids = [pk for pk, refused in refusals.items() if refused is None]
    evaluations = sum(g["n"] for g in groups if g["kind"] == EnvelopeKind.EVALUATION)
    counts = {"all": total, "mine": len(mine_ids) + (evaluations if viewer.reviews else 0)}
    if has_requests:
        counts["team"] = visible.filter(team_scope(person)).count()
    inbox["scopes"] = filters.scope_links(counts)
    channels = {(g["approval_request__channel_id"], g["approval_request__channel__name"]) for g in groups}
    inbox["options"] = {
        "agents": sorted({g["agent_id"] for g in groups if g["agent_id"]}),
        "surfaces": sorted({g["surface_id"] for g in groups if g["surface_id"]}),
        "reasons": [
            (code, reason_title(code))
            for code in sorted({g["reason_code"] for g in groups if g["kind"] == EnvelopeKind.EVALUATION})
        ],
        "channels": sorted(((str(pk), name) for pk, name in channels if pk), key=lambda item: item[1].lower()),
        "has_evaluations": bool(evaluations),
        "has_requests": has_requests,
    }

    if filters.state == "decided":
        base = with_risk(decided_envelopes(organization, now))
        if not viewer.reads_all:
            base = base.filter(involving(person))
    else:
        base = visible
    if filters.scope == "mine":
        if filters.state == "decided":
            base = base.filter(_decided_by_me(person))
        else:
            base = base.filter(Q(pk__in=mine_ids) | (Q(kind=EnvelopeKind.EVALUATION) if viewer.reviews else Q(pk=None)))
    elif filters.scope == "team":
        base = base.filter(team_scope(person))
    matching_queryset = filters.apply(base)
    envelopes = list(
        filters.order(matching_queryset).select_related(
            "approval_request__channel__owner", "approval_request__channel__agent"
        )[:INBOX_PAGE_SIZE]
    )
    matching = len(envelopes)
    if matching == INBOX_PAGE_SIZE:
        matching = matching_queryset.count()
    inbox["matching"] = matching
    inbox["cards"] = cards_for(organization, envelopes, refusals, now)
    inbox["more"] = max(0, matching - len(inbox["cards"]))
    inbox["fyi_to_acknowledge"] = sum(1 for card in inbox["cards"] if card.fyi and card.may_act)
    inbox["list_url"] = reverse("admin:envelopes_envelope_changelist") + "?state__exact=awaiting_review"
    return {"inbox": inbox}


def cards_for(organization, envelopes, refusals: dict, now) -> list[InboxCard]:
    requests = [e.approval_request for e in envelopes if e.kind == EnvelopeKind.APPROVAL_REQUEST]
    names = None
    if requests:
        prefetch_related_objects(
            requests,
            "approvals",
            Prefetch("tweaks", queryset=Tweak.objects.filter(status=TweakStatus.OPEN), to_attr="open_tweaks"),
        )
        deciders = [r.decided_by for r in requests if r.status != RequestStatus.PENDING and r.decided_by]
        names = Names.for_rules([], deciders) if deciders else None
    declarations = Declarations.for_envelopes(organization, envelopes)
    cards = []
    for envelope in envelopes:
        if envelope.kind == EnvelopeKind.APPROVAL_REQUEST:
            refused = refusals.get(str(envelope.pk), ...)  # ...: not asked (not waiting for this person)
            cards.append(request_card(envelope, declarations, refused, now, names))
        else:
            cards.append(card_for(envelope, declarations))
    return cards


def live_state(request):
    """``GET`` the inbox's (or one envelope's) version: pages poll this small answer every few
    seconds and fetch themselves again only when it changes."""
    if not may_use_console(request):
        return JsonResponse({"error": "forbidden"}, status=403)
    organization = console_organization(request)
    envelope_id = request.GET.get("envelope", "")
    if envelope_id:
        envelope = (
            Envelope.objects.filter(pk=envelope_id, organization=organization).only("state", "updated_at").first()
            if is_uuid(envelope_id) and organization is not None
            else None
        )
        if envelope is None:
            return JsonResponse({"error": "not found"}, status=404)
        body = {"version": envelope_version(envelope), "state": envelope.state}
    else:
        body = {"version": inbox_version(organization) if organization else version_of(0, None)}
    response = JsonResponse(body)
    response["Cache-Control"] = "no-store"
    return response


def acknowledge_many(request):
    """Bulk acknowledge FYI cards (``POST ids``): each through ``decisions.act``, each on its own."""
    if request.method != "POST":
        return redirect("admin:index")
    if not may_use_console(request):
        raise PermissionDenied
    organization = console_organization(request)
    ids = [value for value in request.POST.getlist("ids") if is_uuid(value)]
    done, refused = 0, []
    for request_id in ids[:INBOX_PAGE_SIZE]:
        try:
            act(organization.pk if organization else None, request_id, request.user, "acknowledge")
        except APIError as exc:
            title = ApprovalRequest.objects.filter(pk=request_id).values_list("title", flat=True).first()
            refused.append(f"“{title or request_id}”: {exc.error}")
        else:
            done += 1
    if done:
        messages.success(request, f"Acknowledged {done} card{'s' if done != 1 else ''}.")
    if refused:
        messages.error(request, "Not acknowledged — " + "; ".join(refused))
    if not ids:
        messages.warning(request, "Select the FYI cards to acknowledge first.")
    back = request.POST.get("next", "")
    if not url_has_allowed_host_and_scheme(back, allowed_hosts={request.get_host()}) or not back.startswith("/"):
        back = reverse("admin:index")
    return redirect(back)


# --- the review page -----------------------------------------------------------------------


class ReviewForm(forms.Form):
    decision = forms.ChoiceField(choices=[("approve", "Approve"), ("reject", "Reject")])
    notes = forms.CharField(
        required=False,
        max_length=5000,
        widget=forms.Textarea(attrs={"rows": 3, "placeholder": "Why you decide this way (required to reject)"}),
    )

    def clean(self):
        data = super().clean()
        if data.get("decision") == "reject" and not (data.get("notes") or "").strip():
            self.add_error("notes", "Say why you reject it: the notes are recorded in the evidence chain.")
        return data


def tree(value):
    """A JSON value as nested nodes the templates can render readably."""
    if isinstance(value, dict):
        return {"kind": "map", "items": [(str(key), tree(item)) for key, item in value.items()]}
    if isinstance(value, list):
        return {"kind": "list", "items": [tree(item) for item in value]}
    if value is None:
        return {"kind": "empty", "text": "null"}
    if isinstance(value, bool):
        return {"kind": "scalar", "text": "true" if value else "false"}
    return {"kind": "scalar", "text": str(value)}


def _structure_name(item) -> str:
    if not item:
        return ""
    return f"{item['name']} ({item.get('id')})" if item.get("name") else str(item.get("id"))


def sections_of(envelope, facts: list[Fact]) -> list[dict]:
    """The five MIDAS sections (and the review), as labelled rows."""
    structure = envelope.structure or {}
    explanation = envelope.explanation or {}
    raw = submitted_raw(envelope.submitted_raw)

    def row(label, value="", *, code=False, time=None, node=None):
        return {"label": label, "value": value, "code": code, "time": time, "node": node}

    evaluation_rows = [
        row("Outcome", envelope.outcome or "—"),
        row("Reason", f"{envelope.reason_code} — {(envelope.response or {}).get('explanation', '')}".strip(" —")),
        row("Evaluated", time=envelope.evaluated_at),
        *(row(f.label, f"{f.value} ({f.detail})" if f.detail else f.value) for f in facts),
    ]
    if explanation.get("missing_context_keys"):
        evaluation_rows.append(row("Missing context", ", ".join(explanation["missing_context_keys"])))
    if explanation.get("policy_error"):
        evaluation_rows.append(row("Policy error", explanation["policy_error"]))

    sections = [
        {
            "id": "identity",
            "title": "Identity",
            "rows": [
                row("Envelope", str(envelope.id), code=True),
                row("Request source", envelope.request_source, code=True),
                row("Request ID", envelope.request_id, code=True),
                row("Kind", KIND_LABELS.get(envelope.kind, envelope.kind)),
                row("Schema version", envelope.schema_version),
            ],
        },
        {
            "id": "submitted",
            "title": "Submitted",
            "rows": [row("Received", time=envelope.received_at), row("Request", node=tree(raw))],
            "raw": envelope.submitted_raw,
            "raw_label": "The request exactly as received",
        },
        {
            "id": "resolved",
            "title": "Resolved authority",
            "rows": [
                row(
                    "Surface",
                    f"{envelope.surface_id} v{envelope.surface_version}"
                    if envelope.surface_version
                    else envelope.surface_id,
                    code=True,
                ),
                row(
                    "Profile",
                    f"{envelope.profile_id} v{envelope.profile_version}" if envelope.profile_id else "—",
                    code=bool(envelope.profile_id),
                ),
                row("Agent", envelope.agent_id or "—", code=bool(envelope.agent_id)),
                row("Grant", envelope.grant_id or "—", code=bool(envelope.grant_id)),
                row("Process", _structure_name(structure.get("process")) or "—"),
                row("Business service", _structure_name(structure.get("business_service")) or "—"),
                row(
                    "Capabilities",
                    ", ".join(_structure_name(c) for c in structure.get("capabilities") or []) or "—",
                ),
            ],
        },
        {"id": "evaluation", "title": "Evaluation", "rows": evaluation_rows},
        {
            "id": "integrity",
            "title": "Integrity",
            "rows": [
                row("Audit events", str(len(envelope.audit_event_ids or []))),
                row("First event hash", envelope.first_event_hash, code=True),
                row("Final event hash", envelope.final_event_hash, code=True),
                row("Submitted hash", envelope.submitted_hash, code=True),
            ],
        },
    ]
    if envelope.review_decision:
        sections.append(
            {
                "id": "review",
                "title": "Review",
                "rows": [
                    row("Decision", envelope.review_decision),
                    row("Reviewer", f"{envelope.reviewer_id} ({envelope.reviewer_kind or 'user'})"),
                    row("Reviewed", time=envelope.reviewed_at),
                    row("Notes", envelope.review_notes or "—"),
                ],
            }
        )
    return sections


def chain_rows(events) -> list[dict]:
    return [
        {
            "sequence_no": event.sequence_no,
            "event_type": event.event_type,
            "performer": f"{event.performer_type} · {event.performer_id}",
            "occurred_at": event.occurred_at,
            "hash": event.hash,
            "payload": json.dumps(event.payload, indent=2, sort_keys=True),
        }
        for event in events
    ]


def neighbours(envelope) -> tuple[str, str]:
    """The pages of the waiting envelopes before and after this one in the inbox."""
    pending = pending_envelopes(envelope.organization_id).exclude(pk=envelope.pk).only("id", "kind", "created_at")
    newer = pending.filter(created_at__gt=envelope.created_at).order_by("created_at", "id").first()
    older = pending.filter(created_at__lte=envelope.created_at).first() or (pending.first() if not newer else None)
    return (card_url(newer) if newer else "", card_url(older) if older else "")


def decide(request, envelope, form: ReviewForm) -> None:
    """Record the decision through the review service; say what happened."""
    decision = form.cleaned_data["decision"]
    try:
        review_envelope(envelope.organization, envelope.pk, decision, request.user, form.cleaned_data["notes"])
    except APIError as exc:
        if exc.status_code == 409:
            envelope.refresh_from_db()
            messages.error(request, f"Your decision was not recorded: this envelope was already {_decided(envelope)}.")
        else:
            messages.error(request, f"Your decision was not recorded: {exc.error}")
        return
    verb = "Approved" if decision == "approve" else "Rejected"
    messages.success(request, f"{verb}. The envelope is closed and the decision is in its evidence chain.")


def _decided(envelope) -> str:
    if not envelope.review_decision:
        return f"{envelope.state.replace('_', ' ')}"
    when = envelope.reviewed_at.strftime("%Y-%m-%d %H:%M:%S UTC") if envelope.reviewed_at else "an unknown time"
    return f"{envelope.review_decision.lower()} by {envelope.reviewer_id} at {when}"


def review_page(model_admin, request, object_id):
    """Everything needed to decide one envelope, and the decision itself (POST)."""
    envelope = model_admin.get_object(request, unquote(object_id))
    if envelope is None:
        return model_admin._get_obj_does_not_exist_redirect(request, model_admin.opts, object_id)
    if envelope.kind == EnvelopeKind.APPROVAL_REQUEST:
        return redirect(request_url(envelope.pk))  # an agent's request has its own page
    if not model_admin.has_view_permission(request, envelope):
        raise PermissionDenied
    form = ReviewForm(request.POST or None)
    if request.method == "POST":
        if not may_review(request):
            raise PermissionDenied
        if form.is_valid():
            decide(request, envelope, form)
            return redirect(request.get_full_path())

    events = envelope_events(envelope)
    verdict = assess_chain(events, IntegrityRecord.of(envelope))
    document = envelope_representation(envelope)
    declarations = Declarations.for_envelopes(envelope.organization_id, [envelope])
    card = card_for(envelope, declarations)
    previous_url, next_url = neighbours(envelope)
    context = {
        **model_admin.admin_site.each_context(request),
        "opts": model_admin.opts,
        "title": f"{card.title}: {envelope.agent_id or envelope.request_id}",
        "envelope": envelope,
        "card": card,
        "waiting": envelope.state == EnvelopeState.AWAITING_REVIEW,
        "approved": envelope.review_decision == ReviewDecision.APPROVED,
        "may_review": may_review(request),
        "why_not": "" if may_review(request) else why_not_review(request),
        "form": form,
        "sections": sections_of(envelope, card.facts),
        "chain": chain_rows(events),
        "verdict": verdict,
        "raw_envelope": json.dumps(document, indent=2),
        "previous_url": previous_url,
        "next_url": next_url,
        "inbox_url": reverse("admin:index"),
        "integrity_api": f"/v1/evidence/envelopes/{envelope.id}/integrity",
        "live_url": reverse("admin:envelopes_inbox_live") + f"?envelope={envelope.pk}",
        "live_version": envelope_version(envelope),
    }
    status = 400 if request.method == "POST" else 200
    return TemplateResponse(request, "admin/envelopes/review.html", context, status=status)
