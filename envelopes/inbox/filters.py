"""The inbox's filters, kept in the URL so a link shares the view
(``?scope=mine&type=spend_approval&risk=high&sort=expiring&q=domain``).

A value a filter cannot take is ignored, as if absent, so a stale or hand-edited link still
opens the inbox: choices fall back to their default, a channel that is not an id is dropped,
free text is cut to the longest id it could match.
"""

from functools import cached_property
from urllib.parse import urlencode

import django_filters
from django import forms
from django.core.exceptions import ValidationError
from django.db.models import Exists, F, OuterRef, Q
from django.db.models.functions import Coalesce

from envelopes.choices import NO_DECISION_ROUTES, EnvelopeKind, ReasonCode, RequestType, RiskLevel, TweakStatus
from envelopes.inbox.ids import is_uuid
from envelopes.inbox.labels import KIND_LABELS, TYPE_LABELS, reason_title
from envelopes.inbox.permissions import Viewer
from envelopes.models import Approval, Envelope, GateApprovalState, Tweak
from envelopes.services.queries import NEWEST_FIRST
from governance.models import TeamMembership

SCOPES = (("all", "All"), ("mine", "Mine"), ("team", "My team"))
STATES = (
    ("", "Waiting"),
    ("decide", "Needs a decision"),
    ("fyi", "FYI to acknowledge"),
    ("changes", "Changes requested"),
    ("decided", "Decided, last 7 days"),
)
SORTS = (("", "Priority"), ("newest", "Newest first"), ("oldest", "Oldest first"), ("expiring", "Expiring soonest"))
TYPES = (
    ("evaluation", KIND_LABELS[EnvelopeKind.EVALUATION]),
    ("action", KIND_LABELS[EnvelopeKind.ACTION]),
    *((value, TYPE_LABELS[value]) for value in RequestType.values),
)
RISKS = tuple((level, level) for level in RiskLevel.values)
# The filters that narrow the cards (scope picks whose they are, sort their order).
NARROWING = ("q", "type", "risk", "channel", "agent", "surface", "reason", "state")
# The search box: at most this many characters and words (every word must match).
SEARCH_LENGTH, SEARCH_WORDS = 200, 8


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


def text_match(word: str) -> Q:
    """Envelopes one word of the search box finds: in a request's title or summary, its
    channel's name, the agent, the request or envelope id; in an escalation's title (its
    reason in words), its explanation or its surface; a held action's action id, agent,
    trace id or approval id."""
    lowered = word.lower()
    reasons = [code for code in ReasonCode.values if lowered in reason_title(code).lower() or lowered in code.lower()]
    return (
        Q(approval_request__title__icontains=word)
        | Q(approval_request__summary__icontains=word)
        | Q(approval_request__channel__name__icontains=word)
        | Q(agent_id__icontains=word)
        | Q(request_id__icontains=word)
        | Q(id__istartswith=word)
        | Q(kind=EnvelopeKind.EVALUATION, reason_code__in=reasons)
        | Q(kind=EnvelopeKind.EVALUATION, response__explanation__icontains=word)
        | Q(surface_id__icontains=word)
        | Q(gate_approval__action_id__icontains=word)
        | Q(gate_approval__agent_id__icontains=word)
        | Q(gate_approval__trace_id__icontains=word)
        | Q(gate_approval__approval_id__icontains=word)
    )


def decided_by(person) -> Q:
    """Envelopes the person decided, voted on or asked changes to."""
    return (
        Q(approval_request__decided_by=str(person.pk))
        | Q(reviewer_id=person.get_username())
        | Q(gate_approval__decided_by=person.get_username())
        | Q(pk__in=Approval.objects.filter(person=person).values("request_id"))
        | Q(pk__in=Tweak.objects.filter(requested_by=person).values("request_id"))
    )


class LenientChoiceField(forms.ChoiceField):
    """A choice from the query: surrounding spaces are dropped, and a value that is none of the
    choices becomes ``fallback`` rather than an error."""

    def __init__(self, *args, fallback: str = "", **kwargs):
        super().__init__(*args, **kwargs)
        self.fallback = fallback

    def clean(self, value):
        value = self.to_python(value).strip()
        return value if value and self.valid_value(value) else self.fallback


class LenientChoiceFilter(django_filters.ChoiceFilter):
    field_class = LenientChoiceField


class ClippedCharField(forms.CharField):
    """Free text from the query, cut to ``clip`` characters (longer than the ids it matches)."""

    def __init__(self, *args, clip: int, **kwargs):
        super().__init__(*args, **kwargs)
        self.clip = clip

    def to_python(self, value):
        return super().to_python(value)[: self.clip]


class ClippedCharFilter(django_filters.CharFilter):
    field_class = ClippedCharField


def channel_id(value) -> None:
    if not is_uuid(value):
        raise ValidationError("not a channel id")


class OrderFilter(LenientChoiceFilter):
    """Puts the cards in order rather than narrowing them: by priority (what the agent pinned,
    then the stake, then what has waited longest) unless another sort is chosen; decided cards
    by when they were decided, whatever the sort."""

    def filter(self, qs, value):
        if self.parent.chosen["state"] == "decided":
            return qs.order_by(F("closed_at").desc(nulls_last=True), "-id")
        if value == "newest":
            return qs.order_by(*NEWEST_FIRST)
        if value == "oldest":
            return qs.order_by("created_at", "id")
        if value == "expiring":
            expires = Coalesce("approval_request__expires_at", "gate_approval__expires_at")
            return qs.order_by(expires.asc(nulls_last=True), "created_at", "id")
        return qs.order_by("-top", "-risk_rank", "created_at", "id")


class InboxFilterSet(django_filters.FilterSet):
    """Filters the waiting envelopes (or, with ``state=decided``, those decided lately: the
    caller passes which, see ``decided``) annotated by ``waiting.with_risk``.

    ``viewer`` and ``mine`` (the ids of the waiting requests and held actions the viewer may
    act on) say what the "mine" and "team" scopes keep.
    """

    scope = LenientChoiceFilter(choices=SCOPES, fallback="all", method="filter_scope")
    q = ClippedCharFilter(method="filter_text", clip=SEARCH_LENGTH)
    type = LenientChoiceFilter(choices=TYPES, method="filter_type")
    risk = LenientChoiceFilter(choices=RISKS, field_name="risk")
    channel = django_filters.CharFilter(field_name="approval_request__channel_id", validators=[channel_id])
    agent = ClippedCharFilter(field_name="agent_id", clip=255)
    surface = ClippedCharFilter(field_name="surface_id", clip=255)
    reason = ClippedCharFilter(field_name="reason_code", clip=60)
    state = LenientChoiceFilter(choices=STATES, method="filter_state")
    sort = OrderFilter(choices=SORTS)

    class Meta:
        model = Envelope
        fields = ["scope", "q", "type", "risk", "channel", "agent", "surface", "reason", "state", "sort"]

    def __init__(self, data=None, queryset=None, *, viewer: Viewer | None = None, mine=(), **kwargs):
        super().__init__(data, queryset, **kwargs)
        self.viewer, self.mine = viewer, list(mine)

    @cached_property
    def chosen(self) -> dict[str, str]:
        """Every filter's value, "" (``scope``: "all") where the query has none it can take."""
        self.is_valid()
        return {name: self.form.cleaned_data.get(name, "") for name in self.filters}

    @property
    def decided(self) -> bool:
        return self.chosen["state"] == "decided"

    def narrow(self, queryset):
        """``queryset`` with every filter applied, in the chosen order."""
        self.is_valid()
        return self.filter_queryset(queryset)

    def filter_scope(self, queryset, name, value):
        if value == "team":
            return queryset.filter(team_scope(self.viewer.person))
        if value == "mine" and self.decided:
            return queryset.filter(decided_by(self.viewer.person))
        if value == "mine":  # ``mine``: the requests and held actions the viewer may decide now
            evaluations = Q(kind=EnvelopeKind.EVALUATION) if self.viewer.reviews else Q(pk=None)
            return queryset.filter(Q(pk__in=self.mine) | evaluations)
        return queryset

    def filter_text(self, queryset, name, value):
        for word in value.split()[:SEARCH_WORDS]:
            queryset = queryset.filter(text_match(word))
        return queryset

    def filter_type(self, queryset, name, value):
        if value in ("evaluation", "action"):
            return queryset.filter(kind=value)
        return queryset.filter(approval_request__type=value)

    def filter_state(self, queryset, name, value):
        if value not in ("decide", "fyi", "changes"):
            return queryset  # "decided": the caller passed the decided envelopes
        fyi = Q(approval_request__route__in=NO_DECISION_ROUTES) | Q(approval_request__type=RequestType.INFORMATIONAL)
        open_tweak = Exists(Tweak.objects.filter(request_id=OuterRef("pk"), status=TweakStatus.OPEN))
        if value == "fyi":
            return queryset.filter(fyi)
        if value == "changes":
            return queryset.filter(open_tweak)
        return queryset.filter(
            Q(kind=EnvelopeKind.EVALUATION)
            | Q(kind=EnvelopeKind.ACTION, gate_approval__state=GateApprovalState.PENDING)
            | (Q(kind=EnvelopeKind.APPROVAL_REQUEST) & ~fyi & ~open_tweak)
        )

    # --- links -------------------------------------------------------------------------------

    @property
    def active(self) -> bool:
        return any(self.chosen[name] for name in NARROWING)

    def query(self, **changes) -> str:
        values = {**self.chosen, **changes}
        if values.get("scope") == "all":
            values["scope"] = ""
        return "?" + urlencode({key: value for key, value in values.items() if value})

    @property
    def clear_query(self) -> str:
        scope = self.chosen["scope"]
        return "?" if scope == "all" else f"?scope={scope}"

    def scope_links(self, counts: dict) -> list[dict]:
        return [
            {"code": code, "label": label, "count": counts.get(code), "url": self.query(scope=code)}
            for code, label in SCOPES
        ]
