"""The inbox as one person sees it: which waiting envelopes they may read, counted by scope,
the values the filters can take, and one page of cards.

Escalations alone read in five queries however many there are; agents' requests add a few
(``permissions.actionable``: who may act on each, for "mine"), held actions one
(``permissions.held_action_refusals``), whatever their number too.
"""

from django.db.models import Count, Max

from envelopes.choices import EnvelopeKind
from envelopes.inbox.cards import cards_for
from envelopes.inbox.filters import RISKS, SORTS, STATES, TYPES, InboxFilterSet, team_scope
from envelopes.inbox.labels import reason_title
from envelopes.inbox.permissions import (
    Viewer,
    actionable,
    escalation_refusals,
    held_action_refusals,
    involving,
    readable,
    why_limited,
)
from envelopes.inbox.waiting import decided_envelopes, inbox_version, pending_envelopes, version_of, with_risk

INBOX_PAGE_SIZE = 50


def _filtering(filters: InboxFilterSet, counts: dict) -> dict:
    return {
        "filters": filters.chosen,
        "filtered": filters.active,
        "clear_query": filters.clear_query,
        "scopes": filters.scope_links(counts),
    }


def _groups(visible) -> list[dict]:
    """The visible envelopes counted by what the filters offer (one query)."""
    return list(
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


def _options(groups: list[dict], evaluations: int, has_requests: bool) -> dict:
    """The agents, surfaces, reasons and channels among the visible envelopes."""
    channels = {(g["approval_request__channel_id"], g["approval_request__channel__name"]) for g in groups}
    return {
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


def inbox_for(viewer: Viewer, query, now) -> dict:
    """The ``inbox`` the admin index renders, for the filters in ``query``."""
    organization = viewer.organization
    inbox = {
        "visible": True,
        "organization": organization,
        "reads_all": viewer.reads_all,
        "may_review": viewer.reviews,
        "why_limited": why_limited(viewer),
        "cards": [],
        "total": 0,
        "states": STATES,
        "sorts": SORTS,
        "types": TYPES,
        "risks": RISKS,
    }
    if organization is None:
        return {**inbox, **_filtering(InboxFilterSet(query), {})}
    person = viewer.person
    pending = with_risk(pending_envelopes(organization))

    refusals = None if viewer.reads_all else actionable(viewer)
    visible = readable(viewer, pending, refusals or {})
    groups = _groups(visible)
    total = sum(group["n"] for group in groups)
    inbox["total"] = total
    inbox["version"] = (
        version_of(total, max((g["latest"] for g in groups), default=None))
        if viewer.reads_all
        else inbox_version(organization)
    )
    has_requests = any(g["kind"] == EnvelopeKind.APPROVAL_REQUEST for g in groups)
    if refusals is None and has_requests:
        refusals = actionable(viewer)
    refusals = refusals or {}
    if any(g["kind"] == EnvelopeKind.ACTION for g in groups):
        refusals = {**refusals, **held_action_refusals(viewer)}
    mine_ids = [pk for pk, refused in refusals.items() if refused is None]
    evaluations = sum(g["n"] for g in groups if g["kind"] == EnvelopeKind.EVALUATION)
    counts = {"all": total, "mine": len(mine_ids) + (evaluations if viewer.reviews else 0)}
    if has_requests:
        counts["team"] = visible.filter(team_scope(person)).count()
    filters = InboxFilterSet(query, viewer=viewer, mine=mine_ids)
    inbox.update(_filtering(filters, counts))
    inbox["options"] = _options(groups, evaluations, has_requests)

    base = visible
    if filters.decided:
        base = with_risk(decided_envelopes(organization, now))
        if not viewer.reads_all:
            base = base.filter(involving(person))
    matching_queryset = filters.narrow(base)
    envelopes = list(
        matching_queryset.select_related(
            "approval_request__channel__owner", "approval_request__channel__agent", "gate_approval"
        )[:INBOX_PAGE_SIZE]
    )
    matching = len(envelopes)
    if matching == INBOX_PAGE_SIZE:
        matching = matching_queryset.count()
    inbox["matching"] = matching
    refusals = {**refusals, **escalation_refusals(viewer, envelopes)}
    inbox["cards"] = cards_for(organization, envelopes, refusals, now)
    inbox["more"] = max(0, matching - len(inbox["cards"]))
    inbox["fyi_to_acknowledge"] = sum(1 for card in inbox["cards"] if card.fyi and card.may_act)
    return inbox
