"""The human inbox: envelopes waiting for a person, as cards on the admin index, and the
review page where one is decided.

Views here parse, authorize and render. Deciding is
``envelopes.services.reviews.review_envelope`` — the function ``POST /v1/reviews`` calls —
so the buttons are hints: the service decides, and when someone else decided first its 409
becomes a message naming who decided and when.

Cards are built by ``card_for`` and rendered by one include
(``admin/envelopes/inbox/card.html``), so other kinds of envelopes waiting for a person
(agents' approval requests, held actions) become cards by adding a builder, not a template.
"""

import json
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal, InvalidOperation

from django import forms
from django.contrib import messages
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied
from django.db.models import Count
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import reverse

from controlplane.admin_views import console_organization, console_roles
from controlplane.models import Agent, Surface
from envelopes.api.serializers import envelope_representation, submitted_raw
from envelopes.choices import EnvelopeKind, EnvelopeState, ReasonCode, ReviewDecision
from envelopes.models import Envelope
from envelopes.services.integrity import IntegrityRecord, assess_chain, envelope_events
from envelopes.services.queries import NEWEST_FIRST
from envelopes.services.reviews import REVIEW_ROLES, review_envelope
from governance.api.errors import APIError
from governance.choices import Role

# Who may open the inbox and the envelope pages: readers, and people who act on envelopes.
INBOX_ROLES = frozenset({Role.PLATFORM_VIEWER, Role.GOVERNANCE_APPROVER, *REVIEW_ROLES})
INBOX_PAGE_SIZE = 50

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


def _roles(names) -> str:
    return " or ".join(str(name) for name in names)


# --- who and where -------------------------------------------------------------------------


def may_open_inbox(request) -> bool:
    user = request.user
    if not (user.is_authenticated and user.is_active and user.is_staff):
        return False
    if not (user.is_superuser or user.organization_id):
        return False
    return bool(console_roles(request) & INBOX_ROLES)


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


def number_text(value) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return "—" if value is None else str(value)
    return f"{value:.2f}".rstrip("0").rstrip(".") if value % 1 else str(int(value))


def reason_title(code: str) -> str:
    if not code:
        return "Waiting for review"
    return REASON_TITLES.get(code) or code.replace("_", " ").capitalize()


@dataclass
class Fact:
    label: str
    value: str
    detail: str = ""  # a second line: the limit, the threshold
    alert: bool = False  # this fact is why the envelope waits
    quiet: bool = False  # background detail: on the review page, not on the card


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
class InboxCard:
    """What one waiting envelope looks like in the inbox, whatever its kind."""

    id: str
    url: str
    kind_label: str
    title: str
    summary: str
    who: str  # who asks (the agent)
    who_detail: str
    where: str  # through what (the surface)
    where_detail: str
    risk: str
    facts: list[Fact] = field(default_factory=list)
    meter: Meter | None = None
    created_at: datetime | None = None


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
    return InboxCard(
        id=str(envelope.id),
        url=review_url(envelope.id),
        kind_label=KIND_LABELS.get(envelope.kind, envelope.kind),
        title=reason_title(envelope.reason_code),
        summary=(envelope.response or {}).get("explanation", ""),
        who=envelope.agent_id,
        who_detail=" · ".join(part for part in (agent_name, f"owner {owner}" if owner else "") if part),
        where=envelope.surface_id,
        where_detail=" · ".join(
            part
            for part in (
                surface_name,
                f"v{envelope.surface_version}" if envelope.surface_version else "",
            )
            if part
        ),
        risk=risk,
        facts=facts,
        meter=meter,
        created_at=envelope.created_at,
    )


# --- the inbox -----------------------------------------------------------------------------


@dataclass
class InboxFilters:
    """The inbox's filters, kept in the URL so a link shares the view."""

    agent: str = ""
    surface: str = ""
    reason: str = ""
    oldest_first: bool = False

    @classmethod
    def from_query(cls, query) -> "InboxFilters":
        return cls(
            agent=query.get("agent", "").strip(),
            surface=query.get("surface", "").strip(),
            reason=query.get("reason", "").strip(),
            oldest_first=query.get("sort") == "oldest",
        )

    @property
    def active(self) -> bool:
        return bool(self.agent or self.surface or self.reason)

    def apply(self, queryset):
        if self.agent:
            queryset = queryset.filter(agent_id=self.agent)
        if self.surface:
            queryset = queryset.filter(surface_id=self.surface)
        if self.reason:
            queryset = queryset.filter(reason_code=self.reason)
        return queryset.order_by("created_at", "id") if self.oldest_first else queryset


def inbox_context(request) -> dict:
    """The ``inbox`` the admin index renders. At most five queries, however many cards."""
    if not may_open_inbox(request):
        return {"inbox": {"visible": False, "why": f"The inbox is for people holding {_roles(sorted(INBOX_ROLES))}."}}
    organization = console_organization(request)
    filters = InboxFilters.from_query(request.GET)
    inbox = {
        "visible": True,
        "organization": organization,
        "filters": filters,
        "may_review": may_review(request),
        "cards": [],
        "total": 0,
    }
    if organization is None:
        return {"inbox": inbox}
    pending = pending_envelopes(organization)
    groups = list(pending.order_by().values("agent_id", "surface_id", "reason_code").annotate(n=Count("id")))
    inbox["total"] = sum(group["n"] for group in groups)
    inbox["options"] = {
        "agents": sorted({g["agent_id"] for g in groups if g["agent_id"]}),
        "surfaces": sorted({g["surface_id"] for g in groups if g["surface_id"]}),
        "reasons": [(code, reason_title(code)) for code in sorted({g["reason_code"] for g in groups})],
    }
    matching = sum(
        g["n"]
        for g in groups
        if (not filters.agent or g["agent_id"] == filters.agent)
        and (not filters.surface or g["surface_id"] == filters.surface)
        and (not filters.reason or g["reason_code"] == filters.reason)
    )
    inbox["matching"] = matching
    if matching:
        envelopes = list(filters.apply(pending)[:INBOX_PAGE_SIZE])
        declarations = Declarations.for_envelopes(organization, envelopes)
        inbox["cards"] = [card_for(envelope, declarations) for envelope in envelopes]
    inbox["more"] = max(0, matching - len(inbox["cards"]))
    inbox["list_url"] = reverse("admin:envelopes_envelope_changelist") + "?state__exact=awaiting_review"
    return {"inbox": inbox}


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
    """The review pages of the waiting envelopes before and after this one in the inbox."""
    pending = pending_envelopes(envelope.organization_id).exclude(pk=envelope.pk).only("id", "created_at")
    newer = pending.filter(created_at__gt=envelope.created_at).order_by("created_at", "id").first()
    older = pending.filter(created_at__lte=envelope.created_at).first() or (pending.first() if not newer else None)
    return (review_url(newer.pk) if newer else "", review_url(older.pk) if older else "")


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
    }
    status = 400 if request.method == "POST" else 200
    return TemplateResponse(request, "admin/envelopes/review.html", context, status=status)
