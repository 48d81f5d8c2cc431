"""Agents' approval requests (AIOS Govern ``POST /api/channels/{id}/requests``): validation
of every envelope field, and creation of the request with its evidence chain."""

import json
import math
import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from django.db import transaction
from django.utils import timezone

from envelopes.choices import (
    NO_DECISION_ROUTES,
    TEAM_ROUTES,
    EnvelopeKind,
    EnvelopeState,
    OnTimeout,
    RequestStatus,
    RequestType,
    ReturnMode,
    RiskLevel,
    Route,
    TweakStatus,
)
from envelopes.models import ApprovalRequest, Channel, Envelope, Tweak
from envelopes.services.decide import announce_on_commit
from envelopes.state import StateWalk
from evidence.canonical import canonical_hash
from evidence.services.chain import EventDraft, append_events, json_native
from governance import ijson
from governance.choices import canonical_role
from governance.errors import Invalid
from governance.models import Person, Team
from governance.timestamps import parse_iso_timestamp

MAX_PAYLOAD_BYTES = 256 * 1024
MAX_LONG_POLL_SECONDS = 300
HEX_COLOR = re.compile(r"^#[0-9a-fA-F]{6}$")
ACCENT = re.compile(r"^(#[0-9a-fA-F]{6}|[a-z]{3,20})$")
CURRENCY = re.compile(r"^[A-Z]{3}$")
PULSES = frozenset({"none", "light", "strong"})


def _bad(field: str, message: str):
    raise Invalid(message, field=field)


@dataclass
class Submission:
    """A validated envelope, ready to store."""

    fields: dict
    parent: ApprovalRequest | None


def _text(data, name, *, required=False, max_length=10_000, default="") -> str:
    value = data.get(name)
    if value is None:
        if required:
            _bad(name, "is required")
        return default
    if not isinstance(value, str):
        _bad(name, "must be a string")
    value = value.strip()
    if required and not value:
        _bad(name, "must not be empty")
    if len(value) > max_length:
        _bad(name, f"must be at most {max_length} characters")
    return value


def _choice(data, name, choices, default):
    value = data.get(name)
    if value is None:  # absent: the default, which may be "none given" ("")
        return default
    if value not in choices:
        _bad(name, f"must be one of {', '.join(sorted(choices))}")
    return value


def _bool(data, name) -> bool:
    value = data.get(name, False)
    if value is None:
        return False
    if not isinstance(value, bool):
        _bad(name, "must be true or false")
    return value


def _person(organization, ref: str) -> Person | None:
    people = Person.objects.filter(organization=organization, is_active=True)
    try:
        return people.filter(pk=uuid.UUID(str(ref))).first()
    except ValueError:
        return people.filter(email__iexact=ref).first() or people.filter(username=ref).first()


def resolve_approver(organization, entry, field: str) -> dict:
    """An approver entry in normalized form: {"user": id} | {"team": id} | {"role": name}.

    Accepts a person's UUID (AIOS), or {"user": id|email|username}, {"team": id}, {"role": name}.
    """
    if isinstance(entry, str):
        entry = {"user": entry}
    if not isinstance(entry, dict) or len(entry) != 1:
        _bad(field, 'each approver is a user id, or one of {"user": ...}, {"team": ...}, {"role": ...}')
    ((kind, ref),) = entry.items()
    if not isinstance(ref, str) or not ref.strip():
        _bad(field, f"{kind} must be a non-empty string")
    ref = ref.strip()
    if kind == "user":
        person = _person(organization, ref)
        if person is None:
            _bad(field, f"no person {ref!r} in this organization")
        return {"user": str(person.pk)}
    if kind == "team":
        try:
            team = Team.objects.filter(organization=organization, pk=uuid.UUID(ref)).first()
        except ValueError:
            team = None
        if team is None:
            _bad(field, f"no team {ref!r} in this organization")
        return {"team": str(team.pk)}
    if kind == "role":
        try:
            return {"role": canonical_role(ref)}
        except ValueError:
            _bad(field, f"unknown role {ref!r}")
    _bad(field, f"unknown approver kind {kind!r}")
    return {}


def _approval_rule(organization, data) -> dict:
    rule = data.get("approval_rule")
    if rule is None:
        return {"type": "single"}
    if not isinstance(rule, dict):
        _bad("approval_rule", "must be an object")
    kind = rule.get("type")
    if kind == "single":
        return {"type": "single"}
    if kind == "sequential":
        steps = rule.get("steps")
        if not isinstance(steps, list) or not steps:
            _bad("approval_rule.steps", "must be a non-empty list")
        normalized = []
        for index, step in enumerate(steps):
            # A step is one approver entry, or a list of entries any one of whom may act.
            entries = step if isinstance(step, list) else [step]
            if not entries:
                _bad(f"approval_rule.steps[{index}]", "must name who may act")
            normalized.append([resolve_approver(organization, e, f"approval_rule.steps[{index}]") for e in entries])
        return {"type": "sequential", "steps": normalized}
    if kind == "n_of_x":
        required, approvers = rule.get("required"), rule.get("approvers")
        if isinstance(required, bool) or not isinstance(required, int) or required < 1:
            _bad("approval_rule.required", "must be a positive integer")
        if not isinstance(approvers, list) or not approvers:
            _bad("approval_rule.approvers", "must be a non-empty list")
        entries = [resolve_approver(organization, e, f"approval_rule.approvers[{i}]") for i, e in enumerate(approvers)]
        individuals = {e["user"] for e in entries if "user" in e}
        if len(individuals) == len(entries) and required > len(individuals):
            _bad("approval_rule.required", f"needs {required} distinct approvers but names {len(individuals)}")
        return {"type": "n_of_x", "required": required, "approvers": entries}
    _bad("approval_rule.type", "must be single, sequential or n_of_x")
    return {}


def _timestamp(data, name) -> datetime | None:
    value = data.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        _bad(name, "must be an RFC 3339 timestamp")
    try:
        moment = parse_iso_timestamp(value)
    except ValueError:
        _bad(name, "must be an RFC 3339 timestamp")
    if moment.tzinfo is None:
        _bad(name, "must include a UTC offset")
    return moment.astimezone(UTC)


def _payload(data, request_type) -> dict:
    payload = data.get("payload", {})
    if payload is None:
        payload = {}
    try:
        ijson.check(payload, "payload")
    except ijson.OutOfDomain as exc:
        _bad(exc.path, exc.message)
    try:
        size = len(json.dumps(payload, separators=(",", ":"), allow_nan=False).encode())
    except ValueError:
        _bad("payload", "must be JSON without NaN or Infinity")
    if size > MAX_PAYLOAD_BYTES:
        _bad("payload", f"must be at most {MAX_PAYLOAD_BYTES // 1024} KiB")
    if request_type in (RequestType.CHOICE, RequestType.SPEND_APPROVAL, RequestType.POLL_REQUEST) and not isinstance(
        payload, dict
    ):
        _bad("payload", "must be an object for this type")
    if request_type == RequestType.CHOICE:
        options = payload.get("options")
        if not isinstance(options, list) or not options:
            _bad("payload.options", "a choice needs a non-empty list of options")
        for index, option in enumerate(options):
            label = option.get("label", option.get("id")) if isinstance(option, dict) else option
            if not isinstance(label, str | int | float) or isinstance(label, bool):
                _bad(f"payload.options[{index}]", "must be a string or {id, label}")
    if request_type == RequestType.SPEND_APPROVAL:
        amount, currency = payload.get("amount"), payload.get("currency")
        if isinstance(amount, bool) or not isinstance(amount, int | float) or not math.isfinite(amount) or amount < 0:
            _bad("payload.amount", "a spend approval needs a non-negative amount")
        if not isinstance(currency, str) or not CURRENCY.match(currency):
            _bad("payload.currency", "a spend approval needs an ISO 4217 currency")
    if request_type == RequestType.POLL_REQUEST:
        url = payload.get("poll_url")
        if not isinstance(url, str) or not url.startswith("https://"):
            _bad("payload.poll_url", "a poll request needs an https poll_url")
    return payload


def validate_submission(channel: Channel, data) -> Submission:
    """Every field of the AIOS envelope schema, or a 400 naming the field."""
    from governance.network import check_webhook_url

    if not isinstance(data, dict):
        _bad("body", "must be a JSON object")
    organization = channel.organization
    request_type = _choice(data, "type", RequestType.values, None)
    if request_type is None:
        _bad("type", "is required")
    route = _choice(data, "route", Route.values, Route.APPROVAL)
    team = None
    if route in TEAM_ROUTES or data.get("team_id") is not None:
        team_ref = _text(data, "team_id", required=route in TEAM_ROUTES, max_length=64)
        if team_ref:
            try:
                team = Team.objects.filter(organization=organization, pk=uuid.UUID(team_ref)).first()
            except ValueError:
                team = None
            if team is None:
                _bad("team_id", "no such team in this organization")
    bg_color = _text(data, "bg_color", max_length=7)
    if bg_color and not HEX_COLOR.match(bg_color):
        _bad("bg_color", "must be #rrggbb")
    accent_bar = _text(data, "accent_bar", max_length=20)
    if accent_bar and not ACCENT.match(accent_bar):
        _bad("accent_bar", "must be a color name or #rrggbb")
    pulse = _choice(data, "pulse", PULSES, "none")

    expires_at = _timestamp(data, "expires_at")
    if expires_at is not None and expires_at <= timezone.now():
        _bad("expires_at", "must be in the future")
    on_timeout = _choice(data, "on_timeout", OnTimeout.values, "")
    if on_timeout and expires_at is None:
        _bad("on_timeout", "needs expires_at")
    if expires_at is not None and not on_timeout:
        on_timeout = OnTimeout.EXPIRE

    return_webhook = _text(data, "return_webhook", max_length=2000)
    return_mode = _choice(
        data, "return_mode", ReturnMode.values, ReturnMode.WEBHOOK if return_webhook else ReturnMode.LONG_POLL
    )
    if return_mode in (ReturnMode.WEBHOOK, ReturnMode.BOTH) and not return_webhook:
        _bad("return_webhook", f"is required with return_mode {return_mode}")
    if return_webhook:
        problem = check_webhook_url(return_webhook)
        if problem:
            _bad("return_webhook", problem)
    timeout = data.get("long_poll_timeout_seconds", 60)
    if isinstance(timeout, bool) or not isinstance(timeout, int) or not 1 <= timeout <= MAX_LONG_POLL_SECONDS:
        _bad("long_poll_timeout_seconds", f"must be an integer from 1 to {MAX_LONG_POLL_SECONDS}")

    parent = None
    parent_ref = data.get("parent_envelope_id")
    if parent_ref is not None:
        try:
            parent_id = uuid.UUID(str(parent_ref))
        except ValueError:
            _bad("parent_envelope_id", "must be a UUID")
        parent = ApprovalRequest.objects.filter(envelope_id=parent_id, channel=channel).first()
        if parent is None:
            _bad("parent_envelope_id", "no such request on this channel")

    fields = {
        "type": request_type,
        "title": _text(data, "title", required=True, max_length=300),
        "summary": _text(data, "summary", max_length=10_000),
        "risk_level": _choice(data, "risk_level", RiskLevel.values, RiskLevel.MEDIUM),
        "payload": _payload(data, request_type),
        "approval_rule": _approval_rule(organization, data),
        "route": route,
        "team": team,
        "bg_color": bg_color,
        "badge": _text(data, "badge", max_length=40),
        "accent_bar": accent_bar,
        "pulse": pulse,
        "top_sort": _bool(data, "top_sort"),
        "expires_at": expires_at,
        "on_timeout": on_timeout,
        "tweak_allowed": _bool(data, "tweak_allowed"),
        "return_mode": return_mode,
        "return_webhook": return_webhook,
        "long_poll_timeout_seconds": timeout,
    }
    return Submission(fields, parent)


def needs_no_decision(request: ApprovalRequest) -> bool:
    return request.route == Route.LOG_ONLY


@transaction.atomic
def submit_request(channel: Channel, data: dict, raw: str) -> ApprovalRequest:
    """Validate and store an agent's request; it waits for people (log_only: closed at once)."""
    from envelopes.requests.decisions import supersede

    submission = validate_submission(channel, data)
    now = timezone.now()
    envelope_id = uuid.uuid4()
    walk = StateWalk(EnvelopeState.RECEIVED)
    fields = submission.fields
    logged_only = fields["route"] == Route.LOG_ONLY
    events = [
        EventDraft(
            "ENVELOPE_CREATED",
            {"state": walk.state, "channel_id": str(channel.pk), "type": fields["type"]},
            "channel",
            str(channel.pk),
            now,
        ),
        EventDraft(
            "REQUEST_ROUTED",
            {
                "route": fields["route"],
                "approval_rule": fields["approval_rule"],
                "team_id": str(fields["team"].pk) if fields["team"] else None,
                "expires_at": fields["expires_at"],
                "on_timeout": fields["on_timeout"],
            },
            occurred_at=now,
        ),
    ]
    if logged_only:
        events.append(
            EventDraft(
                "ENVELOPE_CLOSED",
                {"state": walk.to(EnvelopeState.CLOSED), "status": RequestStatus.ACKNOWLEDGED},
                occurred_at=now,
            )
        )
    else:
        events.append(
            EventDraft("ESCALATION_PENDING", {"state": walk.to(EnvelopeState.AWAITING_REVIEW)}, occurred_at=now)
        )
    stored = append_events(str(envelope_id), events, new_chain=True)
    envelope = Envelope.objects.create(
        id=envelope_id,
        organization=channel.organization,
        kind=EnvelopeKind.APPROVAL_REQUEST,
        state=walk.state,
        request_source=f"channel:{channel.pk}",
        request_id=str(envelope_id),
        submitted_raw=raw,
        submitted_hash=canonical_hash(json_native(data)),
        received_at=now,
        agent_id=channel.agent.key if channel.agent_id else "",
        created_at=now,
        updated_at=now,
        closed_at=now if logged_only else None,
        audit_event_ids=[str(e.id) for e in stored],
        first_event_hash=stored[0].hash,
        final_event_hash=stored[-1].hash,
    )
    request = ApprovalRequest.objects.create(
        envelope=envelope,
        channel=channel,
        parent=submission.parent,
        status=RequestStatus.ACKNOWLEDGED if logged_only else RequestStatus.PENDING,
        decided_by="system" if logged_only else "",
        decision_time=now if logged_only else None,
        ttl=fields["expires_at"] - now if fields["expires_at"] else None,
        **fields,
    )
    if submission.parent is not None:
        supersede(submission.parent, request)
    if not logged_only and fields["route"] in NO_DECISION_ROUTES:
        from envelopes.requests.notifications import email_fyi

        transaction.on_commit(lambda: email_fyi(request.pk))
    announce_on_commit(channel.organization_id, [request.pk])  # a new card: waiters and live inboxes
    return request


def open_tweak(request: ApprovalRequest) -> Tweak | None:
    return request.tweaks.filter(status=TweakStatus.OPEN).first()
