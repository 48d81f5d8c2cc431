"""The inbox's filters, kept in the URL so a link shares the view
(``?scope=mine&type=spend_approval&risk=high&sort=expiring``)."""

from dataclasses import dataclass
from urllib.parse import urlencode

from django.db.models import Exists, F, OuterRef, Q

from envelopes.choices import NO_DECISION_ROUTES, EnvelopeKind, RequestType, RiskLevel, TweakStatus
from envelopes.inbox.ids import is_uuid
from envelopes.inbox.labels import TYPE_LABELS
from envelopes.models import Approval, Tweak
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


def decided_by(person) -> Q:
    """Envelopes the person decided, voted on or asked changes to."""
    return (
        Q(approval_request__decided_by=str(person.pk))
        | Q(reviewer_id=person.get_username())
        | Q(pk__in=Approval.objects.filter(person=person).values("request_id"))
        | Q(pk__in=Tweak.objects.filter(requested_by=person).values("request_id"))
    )
