"""How the inbox says things: the words for kinds, types, reasons, states and routes; amounts,
consequences and numbers as a person reads them; people and teams by name rather than id."""

import json
from decimal import Decimal, InvalidOperation

from django.db import models

from envelopes.approval_rules import ApprovalRule
from envelopes.choices import NO_DECISION_ROUTES, EnvelopeKind, ReasonCode, RequestStatus, RequestType, Route
from envelopes.inbox.ids import is_uuid
from envelopes.models import ApprovalRequest, Channel, GateApprovalState
from governance.models import Person, Team

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

STATUS_LABELS = {
    RequestStatus.PENDING: "Waiting",
    RequestStatus.APPROVED: "Approved",
    RequestStatus.REJECTED: "Rejected",
    RequestStatus.ACKNOWLEDGED: "Acknowledged",
    RequestStatus.EXPIRED: "Expired",
}


# Why the gate held an action (its policy's ``hold_reason``), as a person reads it.
HOLD_REASONS = {
    "risk_level_high": "High or critical risk: a person approves every call of this action",
    "sensitive_path": "It touches a sensitive path (.env, secrets/, .ssh/, cloud credentials)",
    "unresolved_domain": "It calls a domain that is not on the action's allowlist",
    "unresolved_path": "It reaches a path that is not among the action's allowed paths",
}

GATE_STATE_LABELS = {
    GateApprovalState.PENDING: "Waiting",
    GateApprovalState.CLAIMED: "Approved, running",
    GateApprovalState.APPROVED: "Approved and executed",
    GateApprovalState.DENIED: "Denied",
    GateApprovalState.EXPIRED: "Expired",
    GateApprovalState.FAILED: "Approved, execution failed",
}


def hold_reason_text(reason: str) -> str:
    """A held action's reason in words; a reason the gate wrote as a sentence stays as it is."""
    return HOLD_REASONS.get(reason, reason) or "Held for a person"


def action_title(action_id: str, version: str) -> str:
    """ "Held action: http_delete v1.2.0", as cards, pages and notifications name it."""
    if not version:
        return f"Held action: {action_id}"
    return f"Held action: {action_id} {version if version[:1] in 'vV' else f'v{version}'}"


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


def person_label(person) -> str:
    return "" if person is None else str(person)  # Person.__str__ is the console's one form


class Names:
    """People and teams an approval rule names, by id (two queries at most)."""

    def __init__(self, people: dict, teams: dict):
        self.people, self.teams = people, teams

    @classmethod
    def for_rules(cls, rules, extra_people=()) -> "Names":
        users, teams = set(extra_people), set()
        for rule in rules:
            for entry in ApprovalRule.parse(rule).every_entry():
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


def people_names(organization_id, refs: set[str]) -> dict[str, str]:
    """People by id or (for reviews through the API) by username, as ``person_label`` says them."""
    ids = [r for r in refs if is_uuid(r)]
    found = Person.objects.filter(models.Q(pk__in=ids) | models.Q(username__in=refs))
    if organization_id is not None:
        found = found.filter(organization_id=organization_id)
    names = {}
    for person in found:
        names[str(person.pk)] = names[person.username] = person_label(person)
    return names


def channel_names(organization_id, refs: set[str]) -> dict[str, str]:
    """Agents' channels by their name."""
    found = Channel.objects.filter(pk__in=[r for r in refs if is_uuid(r)])
    if organization_id is not None:
        found = found.filter(organization_id=organization_id)
    return {str(pk): name for pk, name in found.values_list("pk", "name")}
