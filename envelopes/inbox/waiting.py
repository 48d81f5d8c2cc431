"""The envelopes waiting for a person (and those decided lately), with each one's risk in the
same query; the versions pages poll to learn that something changed; a page's neighbours and
the links every envelope page carries."""

from datetime import timedelta

from django.db.models import (
    BooleanField,
    Case,
    CharField,
    Count,
    F,
    IntegerField,
    Max,
    OuterRef,
    Q,
    Subquery,
    Value,
    When,
)
from django.db.models.functions import Coalesce
from django.urls import reverse

from controlplane.models import Surface
from envelopes.choices import EnvelopeKind, EnvelopeState, RiskLevel, Route
from envelopes.inbox.cards import card_url
from envelopes.models import Envelope
from envelopes.services.queries import NEWEST_FIRST

DECIDED_WINDOW = timedelta(days=7)
RISK_RANK = {RiskLevel.CRITICAL: 4, RiskLevel.HIGH: 3, RiskLevel.MEDIUM: 2, RiskLevel.LOW: 1}


def pending_envelopes(organization):
    """Envelopes of the organization waiting for a person, newest first."""
    return Envelope.objects.filter(organization=organization, state=EnvelopeState.AWAITING_REVIEW).order_by(
        *NEWEST_FIRST
    )


def with_risk(queryset):
    """Each envelope's risk (the request's or the held action's level, or the escalated
    surface's tier), its rank and whether it is pinned to the top — in the same query."""
    surface_risk = Subquery(
        Surface.objects.filter(
            organization_id=OuterRef("organization_id"), key=OuterRef("surface_id"), version=OuterRef("surface_version")
        ).values("risk_tier")[:1]
    )
    queryset = queryset.annotate(
        risk=Coalesce(
            F("approval_request__risk_level"),
            F("gate_approval__risk_level"),
            surface_risk,
            Value(""),
            output_field=CharField(),
        ),
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
    """Envelopes a person decided (or that timed out) in the last week: every held action
    closes that way."""
    waited = Q(kind=EnvelopeKind.APPROVAL_REQUEST) & ~Q(approval_request__route=Route.LOG_ONLY)
    reviewed = Q(kind=EnvelopeKind.EVALUATION) & ~Q(review_decision="")
    return Envelope.objects.filter(
        waited | reviewed | Q(kind=EnvelopeKind.ACTION),
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


def neighbours(envelope) -> tuple[str, str]:
    """The pages of the waiting envelopes before and after this one in the inbox."""
    pending = pending_envelopes(envelope.organization_id).exclude(pk=envelope.pk).only("id", "kind", "created_at")
    newer = pending.filter(created_at__gt=envelope.created_at).order_by("created_at", "id").first()
    older = pending.filter(created_at__lte=envelope.created_at).first() or (pending.first() if not newer else None)
    return (card_url(newer) if newer else "", card_url(older) if older else "")


def envelope_links(envelope, *, with_neighbours: bool = True) -> dict:
    """What every envelope page links to: the inbox, the waiting envelopes around it, its
    integrity API, and the live version it polls."""
    previous_url, next_url = neighbours(envelope) if with_neighbours else ("", "")
    return {
        "previous_url": previous_url,
        "next_url": next_url,
        "inbox_url": reverse("admin:index"),
        "integrity_api": f"/v1/evidence/envelopes/{envelope.pk}/integrity",
        "live_url": reverse("admin:envelopes_inbox_live") + f"?envelope={envelope.pk}",
        "live_version": envelope_version(envelope),
    }
