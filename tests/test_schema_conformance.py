"""The OpenAPI schema tells the truth: schemathesis generates requests for every operation of
``/api/schema/``, sends them to the Django app in-process (WSGI), and checks that no answer
is a 5xx and every answer matches the schema's response for its status code.

Bounded for ``make test``: ``EXAMPLES`` generated cases per operation, derandomized (the same
cases every run), plus one case per operation whose path names the demo's real resources, so
the 200 shapes are checked and not only the 404s. ``SCHEMATHESIS_EXAMPLES=200`` runs it
deeper (docs/reliability.md, "Schema conformance", records such a run).
"""

import json
import os
import time
from datetime import timedelta

import pytest
import schemathesis
from django.core import signals
from django.db import close_old_connections
from django.utils import timezone
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from controlplane.models import Profile
from envelopes.evaluation.engine import EvaluationRequest, evaluate
from envelopes.requests.channels import create_invite, register_channel
from envelopes.requests.submissions import submit_request
from governance.choices import Role
from governance.gate.state import end_drain
from governance.services.people import create_person
from governance.services.runtime_packages import register_package
from governance.services.tokens import issue_token
from governance.wsgi import application
from tests.factories import declare_demo_authority
from tests.install_world import make_active_device, make_owner, signed_in_session

EXAMPLES = int(os.environ.get("SCHEMATHESIS_EXAMPLES", "4"))
BUDGET_SECONDS = 60

schema = schemathesis.openapi.from_wsgi("/api/schema/?format=json", application)
CHECKS = [schemathesis.checks.not_a_server_error, schemathesis.checks.response_schema_conformance]


def _with_short_long_poll(case):
    """A long poll waits (up to 300 s) for a decision nobody makes here: a timeout the server
    would accept becomes a tenth of a second; a malformed one is still sent as generated."""
    if case.operation.path.endswith("/wait"):
        raw = str((case.query or {}).get("timeout", "")).strip()
        try:
            accepted = raw == "" or 0 <= float(raw) < float("inf")
        except ValueError:
            accepted = False
        if accepted:
            case.query = {**(case.query or {}), "timeout": "0.1"}
    return case


class World:
    """The demo organization with one of everything the operations read, and the credentials
    to call them: a platform.admin token and an agent channel's key."""

    def __init__(self):
        from governance.services.people import ensure_organization

        org = declare_demo_authority(ensure_organization("demo", "Demo"))
        admin = create_person(org, "schema-admin", roles=[Role.PLATFORM_ADMIN])
        _, self.admin_token = issue_token(admin, "schemathesis", [Role.PLATFORM_ADMIN])
        owner = create_person(org, "schema-owner", roles=[Role.GOVERNANCE_APPROVER])
        _, invite = create_invite(owner)
        channel, self.channel_key, _ = register_channel(invite, name="schemathesis bot", agent_id="agent-payments-prod")
        self.channel_id = str(channel.pk)
        body = {"type": "approval_request", "title": "Deploy"}
        approval = submit_request(channel, body, json.dumps(body))
        self.approval_request_id = str(approval.pk)
        request = EvaluationRequest(
            surface_id="surf-payment-release",
            agent_id="agent-payments-prod",
            confidence=0.95,
            request_source="api",
            request_id="schemathesis-1",
            consequence={"type": "monetary", "amount": 500, "currency": "GBP"},
            context={"account_id": "acc-1", "destination_country": "GB"},
        )
        envelope_id = evaluate(org, request, "{}", performer_id="schemathesis")["envelope_id"]
        Profile.objects.filter(organization=org).update(effective_date=timezone.now() - timedelta(days=1))
        # A launcher's wallet session, its owner's root, a device and a package (docs/installs.md).
        org.org_root_id = "org.demo.root"
        org.save(update_fields=["org_root_id"])
        owner = make_owner("org.demo.root", organization=org)
        self.wallet_session = signed_in_session(owner.account)
        make_active_device(owner, "schemathesis-device")
        register_package(
            platform="macos",
            rollout_channel="stable",
            runtime_version="1.0.0",
            package_url="https://downloads.example/1.0.0.pkg",
            package_hash="sha256:" + "09" * 32,
            policy_hash="sha256:" + "f1" * 32,
        )
        self.known = {
            "/v1/agents/": "agent-payments-prod",
            "/v1/businessservices/": "bs-payments",
            "/v1/capabilities/": "cap-money-movement",
            "/v1/processes/": "proc-payment-release",
            "/v1/profiles/": "prof-payments-standard",
            "/v1/surfaces/": "surf-payment-release",
            "/v1/grants/": "grant-payments-agent-standard",
            "/v1/controlplane/grants/": "grant-payments-agent-standard",
            "/v1/controlplane/profiles/": "prof-payments-standard",
            "/v1/controlplane/surfaces/": "surf-payment-release",
            "/v1/envelopes/": str(envelope_id),
            "/v1/evidence/envelopes/": str(envelope_id),
            "/v1/decisions/request/": "schemathesis-1",
            "/api/channels/": self.channel_id,
            "/api/requests/": self.approval_request_id,
        }

    def headers_for(self, operation) -> dict:
        schemes = {name for requirement in operation.definition.raw.get("security", []) for name in requirement}
        if "walletSession" in schemes:
            return {"Authorization": f"Bearer {self.wallet_session}"}
        key = self.channel_key if "channelKey" in schemes else self.admin_token
        return {"Authorization": f"Bearer {key}"}

    def with_known_ids(self, case):
        """The case with every path parameter naming the demo's resource of that path."""
        for prefix, value in self.known.items():
            if case.operation.path.startswith(prefix):
                for name in case.path_parameters or {}:
                    case.path_parameters[name] = value
        return case


def _operations():
    for result in schema.get_all_operations():
        yield result.ok()


def _exercise(operation, world, seen: list) -> None:
    """``EXAMPLES`` derandomized cases of one operation, each checked against the schema."""
    headers = world.headers_for(operation)

    @settings(
        max_examples=EXAMPLES,
        derandomize=True,
        database=None,
        deadline=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(), known=st.booleans())
    def exercise(case, known):
        if known:
            world.with_known_ids(case)
        _with_short_long_poll(case)
        case.call_and_validate(headers=headers, checks=CHECKS)
        if operation.label == "POST /v1/admin/drain":
            # Drained, every later gate call is 503 draining: an answer on purpose, which the
            # server-error check cannot tell from a failure. The drain has been exercised.
            end_drain("schemathesis")
        seen.append(operation.label)

    exercise()


@pytest.mark.django_db(transaction=True)
def test_every_operation_answers_within_its_schema():
    world = World()
    started = time.monotonic()
    seen = []
    for operation in _operations():
        _exercise(operation, world, seen)
    elapsed = time.monotonic() - started
    print(f"schemathesis: {len(set(seen))} operations, {len(seen)} cases, {elapsed:.1f} s, failures: 0")
    assert len(set(seen)) == len(list(_operations()))
    if EXAMPLES <= 4:
        assert elapsed < BUDGET_SECONDS


# --- the shapes schemathesis found wrong, one test each -----------------------------------


@pytest.fixture
def world(db):
    """The world inside the test's transaction. The WSGI handler closes the connection after
    each request (``close_old_connections``), which would end that transaction; Django's test
    client stops it the same way."""
    signals.request_started.disconnect(close_old_connections)
    signals.request_finished.disconnect(close_old_connections)
    try:
        yield World()
    finally:
        signals.request_started.connect(close_old_connections)
        signals.request_finished.connect(close_old_connections)


def _conforms(world, label, *, path_parameters=None, query=None):
    operation = schema.find_operation_by_label(label)
    case = operation.Case(path_parameters=path_parameters or {}, query=query or {})
    response = case.call_and_validate(headers=world.headers_for(operation), checks=CHECKS)
    assert response.status_code == 200
    return response.json()


def test_a_monetary_profile_threshold_matches_the_schema(world):
    body = _conforms(world, "GET /v1/profiles/{id}", path_parameters={"id": "prof-payments-standard"})
    assert body["consequence_threshold"] == {"type": "monetary", "amount": 10000.0, "currency": "GBP"}
    _conforms(world, "GET /v1/profiles/{id}/versions", path_parameters={"id": "prof-payments-standard"})


def test_an_explanation_without_missing_keys_or_policy_error_matches_the_schema(world):
    envelope_id = world.known["/v1/envelopes/"]
    body = _conforms(world, "GET /v1/envelopes/{id}", path_parameters={"id": envelope_id})
    assert "missing_context_keys" not in body["evaluation"]["explanation"]
    assert "policy_error" not in body["evaluation"]["explanation"]
    assert "review" not in body


def test_an_envelope_list_holding_an_agents_request_matches_the_schema(world):
    """An agent's approval request is an envelope without an outcome, listed with the agent's
    evaluations."""
    body = _conforms(world, "GET /v1/envelopes", query={"agent_id": "agent-payments-prod"})
    assert sorted(item["evaluation"]["outcome"] for item in body) == ["", "accept"]
    _conforms(world, "GET /v1/envelopes", query={"agent_id": "agent-payments-prod", "limit": 5})
    assert _conforms(world, "GET /v1/envelopes", query={"agent_id": "0"}) == []


def test_schema_version_is_the_integer_one_as_midas_sends_it(world):
    body = _conforms(world, "GET /v1/envelopes/{id}", path_parameters={"id": world.known["/v1/envelopes/"]})
    assert body["identity"]["schema_version"] == 1
