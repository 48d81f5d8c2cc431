"""AIOS Govern's agent API: channel registration, channel isolation, envelope submission
(one test per validation rule) and the request status read."""

import threading
import uuid
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone
from rest_framework.test import APIClient

from envelopes.choices import ChannelStatus, RequestStatus
from envelopes.models import ApprovalRequest, Channel, ChannelInvite
from envelopes.requests.channels import create_invite, revoke_channel, rotate_channel_key
from envelopes.requests.decisions import act
from governance.choices import Role
from governance.models import Team
from tests import factories

pytestmark = pytest.mark.django_db


class Agent:
    """A registered channel as the agent holds it: its id, its key and a client using it."""

    def __init__(self, channel_id: str, api_key: str, webhook_secret: str):
        self.channel_id, self.api_key, self.webhook_secret = channel_id, api_key, webhook_secret
        self.client = APIClient()
        self.client.credentials(HTTP_AUTHORIZATION=f"Bearer {api_key}")

    @property
    def channel(self) -> Channel:
        return Channel.objects.get(pk=self.channel_id)

    def submit(self, body: dict | list | None = None, **fields):
        body = {"type": "approval_request", "title": "Approve domain transfer", **fields} if body is None else body
        return self.client.post(f"/api/channels/{self.channel_id}/requests", body, format="json")


@pytest.fixture
def owner(make_person):
    return make_person(username="owner")


@pytest.fixture
def register(owner):
    def make(person=None, **body) -> Agent:
        _, token = create_invite(person or owner)
        response = APIClient().post("/api/register-channel", {"invite_token": token, **body}, format="json")
        assert response.status_code == 201, response.content
        return Agent(**response.json())

    return make


@pytest.fixture
def agent(register) -> Agent:
    return register(name="deploy bot")


@pytest.fixture
def approver(make_person):
    return make_person(roles=(Role.GOVERNANCE_APPROVER,), username="approver")


# --- registration ---------------------------------------------------------------------------


def test_registering_with_an_invite_returns_the_channel_its_key_and_webhook_secret(owner):
    invite, token = create_invite(owner)
    response = APIClient().post("/api/register-channel", {"invite_token": token, "name": "ops bot"}, format="json")
    assert response.status_code == 201
    body = response.json()
    assert set(body) == {"channel_id", "api_key", "webhook_secret"}
    assert body["api_key"].startswith("mdc_") and body["webhook_secret"].startswith("whsec_")
    channel = Channel.objects.get(pk=body["channel_id"])
    assert (channel.owner, channel.name, channel.organization_id) == (owner, "ops bot", owner.organization_id)
    assert body["api_key"] not in (channel.key_hash, channel.webhook_secret_encrypted)
    invite.refresh_from_db()
    assert invite.used_at is not None and invite.channel == channel


def test_registering_with_an_agent_id_binds_the_channel_to_the_declared_agent(owner, organization):
    declared = factories.agent(organization, key="agent-ops")
    _, token = create_invite(owner)
    response = APIClient().post(
        "/api/register-channel", {"invite_token": token, "agent_id": "agent-ops"}, format="json"
    )
    assert response.status_code == 201
    assert Channel.objects.get(pk=response.json()["channel_id"]).agent == declared


def test_registering_with_an_undeclared_agent_id_is_400_and_leaves_the_invite_unused(owner):
    invite, token = create_invite(owner)
    response = APIClient().post("/api/register-channel", {"invite_token": token, "agent_id": "ghost"}, format="json")
    assert response.status_code == 400
    assert response.json()["error"].startswith("agent_id:")
    invite.refresh_from_db()
    assert invite.used_at is None


@pytest.mark.parametrize(
    "body, error",
    [
        ({"invite_token": "mdi_not-a-real-token"}, "invite_token is not valid"),
        ({}, "invite_token: This field is required."),
        ({"invite_token": 12}, "invite_token: Not a valid string."),
        ({"invite_token": "mdi_x", "name": ["bot"]}, "name: Not a valid string."),
    ],
)
def test_registering_without_a_valid_invite_token_is_400(body, error):
    response = APIClient().post("/api/register-channel", body, format="json")
    assert response.status_code == 400
    assert response.json() == {"error": error}


def test_an_invite_registers_only_once(owner):
    _, token = create_invite(owner)
    first = APIClient().post("/api/register-channel", {"invite_token": token}, format="json")
    second = APIClient().post("/api/register-channel", {"invite_token": token}, format="json")
    assert first.status_code == 201
    assert second.status_code == 410
    assert second.json() == {"error": "invite_token has already been used"}


def test_an_expired_invite_is_410(owner):
    invite, token = create_invite(owner)
    ChannelInvite.objects.filter(pk=invite.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    response = APIClient().post("/api/register-channel", {"invite_token": token}, format="json")
    assert response.status_code == 410
    assert response.json() == {"error": "invite_token has expired"}
    assert not Channel.objects.exists()


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_concurrent_registrations_with_one_invite_create_exactly_one_channel(owner):
    _, token = create_invite(owner)
    attempts = 8
    barrier = threading.Barrier(attempts)
    statuses = []

    def register_once():
        try:
            barrier.wait()
            response = APIClient().post("/api/register-channel", {"invite_token": token}, format="json")
            statuses.append(response.status_code)
        finally:
            connection.close()

    threads = [threading.Thread(target=register_once) for _ in range(attempts)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(statuses) == [201] + [410] * (attempts - 1)
    assert Channel.objects.count() == 1


# --- channel keys and isolation -------------------------------------------------------------


def test_submitting_without_a_key_is_401(agent):
    response = APIClient().post(f"/api/channels/{agent.channel_id}/requests", {"type": "x"}, format="json")
    assert response.status_code == 401
    assert response.json() == {"error": "unauthenticated"}


def test_a_persons_api_token_is_not_a_channel_key(agent, client_with):
    client = client_with(Role.PLATFORM_ADMIN)
    response = client.post(f"/api/channels/{agent.channel_id}/requests", {"type": "x"}, format="json")
    assert response.status_code == 401


def test_an_unknown_channel_key_is_401(agent):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION="Bearer mdc_000000000000_notakey")
    response = client.post(f"/api/channels/{agent.channel_id}/requests", {"type": "x"}, format="json")
    assert response.status_code == 401
    assert response.json() == {"error": "invalid or revoked channel key"}


def test_a_revoked_key_is_401(agent):
    request_id = agent.submit().json()["request_id"]
    revoke_channel(agent.channel)
    assert agent.submit().status_code == 401
    assert agent.client.get(f"/api/requests/{request_id}").status_code == 401
    assert agent.client.get(f"/api/requests/{request_id}/wait?timeout=0").status_code == 401
    assert agent.channel.status == ChannelStatus.REVOKED


def test_a_rotated_key_replaces_the_old_one(agent):
    new_key = rotate_channel_key(agent.channel)
    assert agent.submit().status_code == 401
    agent.client.credentials(HTTP_AUTHORIZATION=f"Bearer {new_key}")
    assert agent.submit().status_code == 201


def test_submitting_to_another_channels_id_is_404(agent, register):
    other = register()
    response = agent.client.post(
        f"/api/channels/{other.channel_id}/requests", {"type": "approval_request", "title": "x"}, format="json"
    )
    assert response.status_code == 404
    assert response.json() == {"error": "channel not found"}
    assert not ApprovalRequest.objects.exists()


def test_submitting_to_a_channel_id_that_is_not_a_uuid_is_404(agent):
    response = agent.client.post(
        "/api/channels/nope/requests", {"type": "approval_request", "title": "x"}, format="json"
    )
    assert response.status_code == 404


def test_another_channels_request_is_404(agent, register, make_person):
    other = register(make_person(username="other-owner"))
    request_id = other.submit().json()["request_id"]
    assert agent.client.get(f"/api/requests/{request_id}").status_code == 404
    response = agent.client.get(f"/api/requests/{request_id}/wait?timeout=0")
    assert response.status_code == 404
    assert response.json() == {"error": "request not found"}
    assert other.client.get(f"/api/requests/{request_id}").status_code == 200


def test_an_unknown_or_malformed_request_id_is_404(agent):
    assert agent.client.get(f"/api/requests/{uuid.uuid4()}").status_code == 404
    assert agent.client.get("/api/requests/not-a-uuid").status_code == 404


def test_a_channel_key_opens_no_person_api(agent):
    response = agent.client.get("/v1/envelopes")
    assert response.status_code == 403


# --- submission -----------------------------------------------------------------------------


def test_submitting_an_envelope_answers_201_pending(agent):
    expires = (timezone.now() + timedelta(hours=1)).replace(microsecond=0)
    response = agent.submit(expires_at=expires.isoformat().replace("+00:00", "Z"), on_timeout="auto_reject")
    assert response.status_code == 201
    body = response.json()
    assert set(body) == {"request_id", "status", "created_at", "expires_at"}
    assert body["status"] == "pending"
    assert body["expires_at"] == expires.isoformat().replace("+00:00", "Z")
    request = ApprovalRequest.objects.select_related("envelope").get(pk=body["request_id"])
    assert request.channel_id == uuid.UUID(agent.channel_id)
    assert request.on_timeout == "auto_reject"
    assert '"Approve domain transfer"' in request.envelope.submitted_raw


def test_a_log_only_envelope_is_recorded_as_acknowledged(agent):
    response = agent.submit(route="log_only")
    assert response.status_code == 201
    assert response.json()["status"] == "acknowledged"
    assert response.json()["expires_at"] is None


def test_every_field_of_the_envelope_schema_is_accepted(agent, organization, approver, make_person):
    team = Team.objects.create(organization=organization, name="SRE")
    second = make_person(roles=(Role.GOVERNANCE_APPROVER,))
    response = agent.submit(
        type="spend_approval",
        summary="Renew the CDN contract",
        risk_level="critical",
        payload={"amount": 499.5, "currency": "EUR"},
        approval_rule={"type": "n_of_x", "required": 2, "approvers": [str(approver.pk), {"user": second.username}]},
        route="approve_team",
        team_id=str(team.pk),
        bg_color="#1b1b1b",
        badge="URGENT",
        accent_bar="green",
        pulse="strong",
        top_sort=True,
        expires_at=(timezone.now() + timedelta(days=1)).isoformat(),
        on_timeout="escalate",
        tweak_allowed=True,
        return_mode="long_poll",
        long_poll_timeout_seconds=300,
    )
    assert response.status_code == 201, response.content
    request = ApprovalRequest.objects.get(pk=response.json()["request_id"])
    assert (request.route, request.team, request.pulse, request.top_sort) == ("approve_team", team, "strong", True)
    assert request.approval_rule["approvers"] == [{"user": str(approver.pk)}, {"user": str(second.pk)}]


def test_a_body_over_512_kib_is_413(agent):
    response = agent.submit(payload={"blob": "x" * (513 * 1024)})
    assert response.status_code == 413


def test_a_body_that_is_not_json_is_400(agent):
    response = agent.client.post(
        f"/api/channels/{agent.channel_id}/requests", "{not json", content_type="application/json"
    )
    assert response.status_code == 400
    assert response.json()["error"].startswith("malformed request body")


def _future(hours=1):
    return (timezone.now() + timedelta(hours=hours)).isoformat()


# Each case: the envelope fields sent (merged over a valid approval_request) and the field the 400 names.
VALIDATION_CASES = {
    "type missing": ({"type": None}, "type: is required"),
    "type unknown": ({"type": "wish"}, "type: must be one of"),
    "title missing": ({"title": None}, "title: is required"),
    "title empty": ({"title": "   "}, "title: must not be empty"),
    "title not a string": ({"title": 7}, "title: must be a string"),
    "title too long": ({"title": "t" * 301}, "title: must be at most 300 characters"),
    "summary not a string": ({"summary": ["a"]}, "summary: must be a string"),
    "summary too long": ({"summary": "s" * 10_001}, "summary: must be at most 10000 characters"),
    "risk_level unknown": ({"risk_level": "extreme"}, "risk_level: must be one of"),
    "payload too large": ({"payload": {"blob": "x" * (257 * 1024)}}, "payload: must be at most 256 KiB"),
    "choice payload not an object": ({"type": "choice", "payload": ["a"]}, "payload: must be an object"),
    "choice without options": ({"type": "choice", "payload": {}}, "payload.options: a choice needs"),
    "choice with a bad option": (
        {"type": "choice", "payload": {"options": ["a", True]}},
        "payload.options[1]: must be a string",
    ),
    "spend without amount": ({"type": "spend_approval", "payload": {"currency": "EUR"}}, "payload.amount:"),
    "spend with a negative amount": (
        {"type": "spend_approval", "payload": {"amount": -1, "currency": "EUR"}},
        "payload.amount:",
    ),
    "spend with a bad currency": (
        {"type": "spend_approval", "payload": {"amount": 1, "currency": "euro"}},
        "payload.currency:",
    ),
    "poll without an https url": (
        {"type": "poll_request", "payload": {"poll_url": "http://ai-poll.com/p/1"}},
        "payload.poll_url:",
    ),
    "approval_rule not an object": ({"approval_rule": "single"}, "approval_rule: must be an object"),
    "approval_rule unknown type": ({"approval_rule": {"type": "majority"}}, "approval_rule.type:"),
    "sequential without steps": ({"approval_rule": {"type": "sequential", "steps": []}}, "approval_rule.steps:"),
    "sequential with an empty step": (
        {"approval_rule": {"type": "sequential", "steps": [[]]}},
        "approval_rule.steps[0]: must name who may act",
    ),
    "approver of an unknown person": (
        {"approval_rule": {"type": "sequential", "steps": [{"user": "nobody@example.com"}]}},
        "approval_rule.steps[0]: no person",
    ),
    "approver of an unknown team": (
        {"approval_rule": {"type": "sequential", "steps": [{"team": str(uuid.UUID(int=1))}]}},
        "approval_rule.steps[0]: no team",
    ),
    "approver of an unknown role": (
        {"approval_rule": {"type": "sequential", "steps": [{"role": "wizard"}]}},
        "approval_rule.steps[0]: unknown role",
    ),
    "approver of an unknown kind": (
        {"approval_rule": {"type": "sequential", "steps": [{"group": "x"}]}},
        "approval_rule.steps[0]: unknown approver kind",
    ),
    "approver entry with two kinds": (
        {"approval_rule": {"type": "sequential", "steps": [{"user": "a", "role": "b"}]}},
        "approval_rule.steps[0]: each approver is",
    ),
    "approver with an empty reference": (
        {"approval_rule": {"type": "sequential", "steps": [{"role": " "}]}},
        "approval_rule.steps[0]: role must be a non-empty string",
    ),
    "n_of_x required zero": (
        {"approval_rule": {"type": "n_of_x", "required": 0, "approvers": [{"role": "approver"}]}},
        "approval_rule.required: must be a positive integer",
    ),
    "n_of_x required boolean": (
        {"approval_rule": {"type": "n_of_x", "required": True, "approvers": [{"role": "approver"}]}},
        "approval_rule.required: must be a positive integer",
    ),
    "n_of_x without approvers": (
        {"approval_rule": {"type": "n_of_x", "required": 1, "approvers": []}},
        "approval_rule.approvers: must be a non-empty list",
    ),
    "n_of_x with a bad approver": (
        {"approval_rule": {"type": "n_of_x", "required": 1, "approvers": [{"role": "wizard"}]}},
        "approval_rule.approvers[0]: unknown role",
    ),
    "route unknown": ({"route": "approve_ceo"}, "route: must be one of"),
    "team route without team_id": ({"route": "approve_team"}, "team_id: is required"),
    "team_id not a string": ({"route": "approve_team", "team_id": 5}, "team_id: must be a string"),
    "team_id unknown": ({"route": "notify_team_owner", "team_id": str(uuid.UUID(int=2))}, "team_id: no such team"),
    "team_id not a uuid": ({"team_id": "sre"}, "team_id: no such team"),
    "bg_color not hex": ({"bg_color": "red"}, "bg_color: must be #rrggbb"),
    "bg_color too long": ({"bg_color": "#1b1b1b1b"}, "bg_color: must be at most 7 characters"),
    "badge too long": ({"badge": "U" * 41}, "badge: must be at most 40 characters"),
    "accent_bar invalid": ({"accent_bar": "url(x)"}, "accent_bar: must be a color name or #rrggbb"),
    "pulse unknown": ({"pulse": "wild"}, "pulse: must be one of"),
    "top_sort not a boolean": ({"top_sort": "yes"}, "top_sort: must be true or false"),
    "expires_at not a timestamp": ({"expires_at": "tomorrow"}, "expires_at: must be an RFC 3339 timestamp"),
    "expires_at not a string": ({"expires_at": 1767225600}, "expires_at: must be an RFC 3339 timestamp"),
    "expires_at without offset": ({"expires_at": "2999-01-01T00:00:00"}, "expires_at: must include a UTC offset"),
    "expires_at in the past": ({"expires_at": "2001-01-01T00:00:00Z"}, "expires_at: must be in the future"),
    "on_timeout unknown": ({"expires_at": _future(), "on_timeout": "panic"}, "on_timeout: must be one of"),
    "on_timeout without expires_at": ({"on_timeout": "auto_approve"}, "on_timeout: needs expires_at"),
    "tweak_allowed not a boolean": ({"tweak_allowed": 1}, "tweak_allowed: must be true or false"),
    "parent_envelope_id not a uuid": ({"parent_envelope_id": "abc"}, "parent_envelope_id: must be a UUID"),
    "parent_envelope_id unknown": (
        {"parent_envelope_id": str(uuid.UUID(int=3))},
        "parent_envelope_id: no such request on this channel",
    ),
    "return_mode unknown": ({"return_mode": "carrier_pigeon"}, "return_mode: must be one of"),
    "webhook mode without return_webhook": ({"return_mode": "both"}, "return_webhook: is required with"),
    "return_webhook not a string": ({"return_webhook": 443}, "return_webhook: must be a string"),
    "return_webhook private": ({"return_webhook": "https://127.0.0.1/hook"}, "return_webhook:"),
    "return_webhook over http": ({"return_webhook": "http://example.com/hook"}, "return_webhook:"),
    "long_poll_timeout_seconds zero": ({"long_poll_timeout_seconds": 0}, "long_poll_timeout_seconds: must be"),
    "long_poll_timeout_seconds over 300": ({"long_poll_timeout_seconds": 301}, "long_poll_timeout_seconds:"),
    "long_poll_timeout_seconds a string": ({"long_poll_timeout_seconds": "60"}, "long_poll_timeout_seconds:"),
    "long_poll_timeout_seconds a boolean": ({"long_poll_timeout_seconds": True}, "long_poll_timeout_seconds:"),
}


@pytest.mark.parametrize("fields, error", VALIDATION_CASES.values(), ids=VALIDATION_CASES.keys())
def test_an_invalid_envelope_field_is_400_naming_the_field(agent, settings, fields, error):
    settings.MANDATE_WEBHOOK_ALLOW_PRIVATE = False
    body = {"type": "approval_request", "title": "Approve domain transfer", **fields}
    body = {key: value for key, value in body.items() if value is not None}
    response = agent.submit(body)
    assert response.status_code == 400, response.content
    assert response.json()["error"].startswith(error)
    assert not ApprovalRequest.objects.exists()


def test_a_body_that_is_not_an_object_is_400(agent):
    response = agent.submit([{"type": "approval_request"}])
    assert response.status_code == 400
    assert response.json() == {"error": "body: must be a JSON object"}


def test_n_of_x_needing_more_people_than_it_names_is_400(agent, approver):
    response = agent.submit(approval_rule={"type": "n_of_x", "required": 2, "approvers": [str(approver.pk)]})
    assert response.status_code == 400
    assert response.json()["error"] == "approval_rule.required: needs 2 distinct approvers but names 1"


def test_another_organizations_team_is_not_a_team_id(agent):
    from governance.services.people import ensure_organization

    elsewhere = Team.objects.create(organization=ensure_organization("globex", "Globex"), name="SRE")
    response = agent.submit(route="approve_team", team_id=str(elsewhere.pk))
    assert response.status_code == 400
    assert response.json()["error"] == "team_id: no such team in this organization"


def test_a_parent_on_another_channel_is_not_a_parent(agent, register):
    other = register()
    foreign = other.submit().json()["request_id"]
    response = agent.submit(parent_envelope_id=foreign)
    assert response.status_code == 400
    assert response.json()["error"] == "parent_envelope_id: no such request on this channel"


# --- status ----------------------------------------------------------------------------------


def test_a_pending_request_reads_pending_without_decision(agent):
    request_id = agent.submit().json()["request_id"]
    response = agent.client.get(f"/api/requests/{request_id}")
    assert response.status_code == 200
    body = response.json()
    assert body["request_id"] == request_id
    assert (body["status"], body["type"], body["title"]) == ("pending", "approval_request", "Approve domain transfer")
    assert (body["decision"], body["tweak"], body["approvals"], body["expires_at"]) == (None, None, [], None)
    assert body["created_at"].endswith("Z")


def test_a_decided_request_reads_its_decision_and_votes(agent, approver, organization):
    request_id = agent.submit().json()["request_id"]
    act(organization.pk, request_id, approver, "approve", comment="go ahead")
    body = agent.client.get(f"/api/requests/{request_id}").json()
    assert body["status"] == RequestStatus.APPROVED
    decision = body["decision"]
    assert (decision["status"], decision["approved_by"], decision["comments"]) == (
        "approved",
        str(approver.pk),
        "go ahead",
    )
    assert decision["envelope_snapshot"]["title"] == "Approve domain transfer"
    assert [(v["person_id"], v["approve"], v["step"]) for v in body["approvals"]] == [(str(approver.pk), True, 0)]


def test_an_open_change_request_reads_as_the_tweak_event(agent, approver, organization):
    request_id = agent.submit(tweak_allowed=True).json()["request_id"]
    act(organization.pk, request_id, approver, "request_changes", comment="Lower the cap to $500")
    body = agent.client.get(f"/api/requests/{request_id}").json()
    assert body["status"] == "pending" and body["decision"] is None
    assert body["tweak"]["event"] == "tweak_requested"
    assert body["tweak"]["request_text"] == "Lower the cap to $500"
    assert body["tweak"]["requested_by"] == str(approver.pk)
