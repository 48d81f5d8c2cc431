"""Cards: what one waiting (or decided) envelope looks like in the inbox, whatever its kind.
``card_for`` builds an escalated evaluation's card, ``request_card`` an agent's request's,
``action_card`` a held action's, and ``cards_for`` one page of them in a fixed number of
queries; one include renders them all (``admin/envelopes/inbox/card.html``)."""

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.db.models import Prefetch, prefetch_related_objects
from django.urls import reverse

from controlplane.models import Agent, Surface
from envelopes.choices import (
    ADMIN_LEVEL,
    MANAGER_LEVEL,
    EnvelopeKind,
    EnvelopeState,
    OnTimeout,
    ReasonCode,
    RequestStatus,
    TweakStatus,
)
from envelopes.inbox.action_plans import plan_view
from envelopes.inbox.labels import (
    GATE_STATE_LABELS,
    KIND_LABELS,
    STATUS_LABELS,
    Names,
    action_title,
    consequence_text,
    hold_reason_text,
    number_text,
    person_label,
    reason_title,
    spend_text,
    type_label,
)
from envelopes.inbox.progress import progress_line
from envelopes.models import ApprovalRequest, GateApproval, GateApprovalState, Tweak
from evidence.performers import PerformerNames

EXPIRES_SOON = timedelta(hours=1)


def review_url(envelope_id) -> str:
    return reverse("admin:envelopes_envelope_review", args=[envelope_id])


def request_url(request_id) -> str:
    return reverse("admin:envelopes_approvalrequest_change", args=[request_id])


def action_url(envelope_id) -> str:
    return reverse("admin:envelopes_envelope_action", args=[envelope_id])


def card_url(envelope) -> str:
    """The page of an envelope of any kind."""
    page = {EnvelopeKind.APPROVAL_REQUEST: request_url, EnvelopeKind.ACTION: action_url}.get(envelope.kind, review_url)
    return page(envelope.pk)


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
        level = approval.next_escalation_level()
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


def card_for(envelope, declarations: Declarations, refused=..., performers: PerformerNames | None = None) -> InboxCard:
    """An escalated evaluation as a card. ``refused``: the viewer's refusal to decide it
    (None: they may; ``...``: not asked). ``performers`` names the reviewer as people are
    named everywhere ("Demo Admin (admin)"); without it one query does."""
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
        performers = performers or PerformerNames.of(envelope.organization_id, [("user", envelope.reviewer_id)])
        card.outcome = f"{envelope.review_decision.capitalize()} by {performers.name('user', envelope.reviewer_id)}"
        card.decided_at = envelope.reviewed_at
    elif refused is not ... and envelope.state == EnvelopeState.AWAITING_REVIEW:
        _say_who_may_act(card, refused)
    return card


def _say_who_may_act(card: InboxCard, refused) -> None:
    """The card's "you can decide" line, or why not in ``refusal``'s words."""
    card.may_act = refused is None
    card.why_not = refused.message if refused is not None else ""


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
        fyi=approval.is_fyi,
    )
    if approval.status == RequestStatus.PENDING:
        card.clock = clock_of(approval, now)
        card.progress = progress_line(approval)
        if getattr(approval, "open_tweaks", None):
            card.note = "Changes requested: waiting for the agent's new version"
        if refused is not ...:
            _say_who_may_act(card, refused)
    else:
        who = "the system" if approval.decided_by in ("", "system") else approval.decided_by
        if names is not None and who != "the system":
            who = names.person(who)
        card.outcome = f"{STATUS_LABELS.get(approval.status, approval.status)} by {who}"
        card.decided_at = approval.decision_time
    return card


# --- held actions as cards -------------------------------------------------------------------

HELD_ACTION_EXPIRY = "then it expires and never runs"


def held_action_clock(approval: GateApproval, now: datetime) -> Clock | None:
    if approval.state != GateApprovalState.PENDING or approval.expires_at is None:
        return None
    left = approval.expires_at - now
    return Clock(approval.expires_at, left.total_seconds() <= 0, left <= EXPIRES_SOON, HELD_ACTION_EXPIRY)


def held_action_outcome(approval: GateApproval, performers: PerformerNames) -> str:
    """A decided held action in words: "Denied by Ada Lovelace (ada)", "Expired unanswered"."""
    if approval.state == GateApprovalState.EXPIRED or not approval.decided_by:
        return "Expired unanswered" if approval.state == GateApprovalState.EXPIRED else ""
    label = GATE_STATE_LABELS.get(approval.state, approval.state)
    return f"{label} by {performers.name('user', approval.decided_by)}"


def action_card(envelope, declarations: Declarations, refused, now: datetime, performers: PerformerNames) -> InboxCard:
    """A held action as a card. ``refused``: the viewer's refusal to decide it (None: they
    may; ``...``: not asked)."""
    approval = envelope.gate_approval
    plan = plan_view(approval)
    agent_name, owner = declarations.agent(envelope)
    who_detail = " · ".join(part for part in (agent_name, f"owner {owner}" if owner else "") if part)
    facts = [
        Fact(
            "Target",
            target.value,
            " · ".join(filter(None, (target.detail, "" if target.known else "not on the allowlist"))),
            alert=not target.known,
            code=True,
        )
        for target in plan.targets
    ]
    card = InboxCard(
        id=str(envelope.id),
        url=action_url(envelope.id),
        kind_label=KIND_LABELS[EnvelopeKind.ACTION],
        title=action_title(approval.action_id, approval.action_version),
        summary=hold_reason_text(approval.hold_reason),
        who=approval.agent_id,
        who_detail=who_detail,
        where=plan.target_text,
        where_detail=plan.provider,
        risk=approval.risk_level,
        facts=facts,
        created_at=envelope.created_at,
        parties=[
            Fact("Agent", approval.agent_id or "—", who_detail, code=True),
            Fact("Session", approval.session_id or "—", code=True),
        ],
        type_code="action",
        clock=held_action_clock(approval, now),
    )
    if approval.state == GateApprovalState.CLAIMED:
        card.note = f"Approved by {performers.name('user', approval.decided_by)}: the stored plan is running"
    elif approval.state != GateApprovalState.PENDING:
        card.outcome = held_action_outcome(approval, performers)
        card.decided_at = approval.decided_at or envelope.closed_at
    elif refused is not ... and envelope.state == EnvelopeState.AWAITING_REVIEW:
        _say_who_may_act(card, refused)
    return card


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
    reviewers = [("user", e.reviewer_id) for e in envelopes if e.kind == EnvelopeKind.EVALUATION and e.reviewer_id]
    operators = [
        ("user", e.gate_approval.decided_by)
        for e in envelopes
        if e.kind == EnvelopeKind.ACTION and e.gate_approval.decided_by
    ]
    performers = PerformerNames.of(getattr(organization, "pk", organization), reviewers + operators)
    cards = []
    for envelope in envelopes:
        refused = refusals.get(str(envelope.pk), ...)  # ...: not asked (not waiting for this person)
        if envelope.kind == EnvelopeKind.APPROVAL_REQUEST:
            cards.append(request_card(envelope, declarations, refused, now, names))
        elif envelope.kind == EnvelopeKind.ACTION:
            cards.append(action_card(envelope, declarations, refused, now, performers))
        else:
            cards.append(card_for(envelope, declarations, refused, performers))
    return cards
