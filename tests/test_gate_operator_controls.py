"""Operator controls over HTTP: ``/v1/admin/status`` (the reference's fields; ok, degraded,
draining), ``drain`` (idempotent), ``revoke-all`` and ``epoch``, and ``/metrics`` (operator
only; Prometheus text whose counters follow the calls, on Django's view and on the hot path
alike). Every change is a ``GATE_ADMIN_*`` ledger event naming the operator; reads are not."""

import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
from rest_framework.test import APIClient

from evidence.models import AuditEvent
from governance.choices import Role
from governance.gate.operator_keys import create_operator_key
from tests import gate_client
from tests.faults import free_port
from tests.gate_client import make_key, operator_headers
from tests.gate_world import Target, gate, refuse_receipts, target  # noqa: F401  (fixtures)
from tests.held_actions import hold_action

pytestmark = pytest.mark.django_db

FETCH = "/v1/actions/local_fetch/execute"


def execute(client, lease, body, path=FETCH, **overrides):
    return client.post(
        path, json.dumps(body), content_type="application/json", **lease.headers("POST", path, **overrides)
    )


def admin_events() -> list[tuple[str, dict]]:
    rows = AuditEvent.objects.filter(event_type__startswith="GATE_ADMIN").order_by("ledger_seq")
    return [(row.event_type, row.payload) for row in rows]


# --- status -------------------------------------------------------------------------------------------


def test_status_answers_the_references_fields(gate, organization, settings):
    hold_action(organization)
    response = gate.operator_client.get("/v1/admin/status")
    assert response.status_code == 200
    status = response.json()
    assert set(status) >= {
        "status",
        "version",
        "uptime_seconds",
        "actions_registered",
        "pending_approvals",
        "revocation_epoch",
        "draining",
        "in_flight_executions",
        "dependencies",
        "webhooks",
    }
    assert status["status"] == "ok" and status["draining"] is False and status["revocation_epoch"] == 0
    assert status["actions_registered"] == 9  # the seven shipped and the world's two
    assert status["pending_approvals"] == 1 and status["in_flight_executions"] == 0
    assert status["dependencies"] == {
        "redis": True if settings.REDIS_URL else None,
        "policy": True,
        "database": True,
    }
    assert set(status["webhooks"]) == {"active", "pending_deliveries"} and status["webhooks"]["active"] is True
    assert status["unresolved_intents"] == 0
    assert admin_events() == []  # polled by monitoring: not audited


def test_status_is_degraded_when_redis_is_away(gate, settings):
    settings.REDIS_URL = f"redis://127.0.0.1:{free_port()}/0"
    status = gate.operator_client.get("/v1/admin/status").json()
    assert (status["status"], status["dependencies"]["redis"], status["webhooks"]["active"]) == (
        "degraded",
        False,
        False,
    )


def test_status_is_degraded_when_the_policy_cannot_load(gate, monkeypatch):
    from envelopes.gate.api import admin

    def broken():
        raise RuntimeError("the policy does not compile")

    monkeypatch.setattr(admin, "current_policy_version", broken)
    status = gate.operator_client.get("/v1/admin/status").json()
    assert (status["status"], status["dependencies"]["policy"]) == ("degraded", False)


def test_a_claim_whose_outcome_was_never_written_is_an_unresolved_intent(gate, organization):
    from datetime import timedelta

    from django.utils import timezone

    from envelopes.models import GateApproval

    stuck, fresh = hold_action(organization).gate_approval, hold_action(organization).gate_approval
    GateApproval.objects.filter(pk=stuck.pk).update(state="claimed", decided_at=timezone.now() - timedelta(minutes=7))
    GateApproval.objects.filter(pk=fresh.pk).update(state="claimed", decided_at=timezone.now())
    assert gate.operator_client.get("/v1/admin/status").json()["unresolved_intents"] == 1


# --- drain ------------------------------------------------------------------------------------------------


def test_drain_is_idempotent_recorded_once_and_refuses_leases_and_calls(api_client, gate, target, make_person):
    lease = gate.lease()
    first = gate.operator_client.post("/v1/admin/drain")
    assert first.json() == {"draining": True, "already_draining": False, "in_flight_executions": 0}
    again = gate.operator_client.post("/v1/admin/drain")
    assert again.json() == {"draining": True, "already_draining": True, "in_flight_executions": 0}
    ((event_type, payload),) = admin_events()
    assert event_type == "GATE_ADMIN_DRAIN" and payload["draining"] is True and payload["change"] == "drain_started"
    assert payload["principal"].startswith("person")  # the operator who asked
    status = gate.operator_client.get("/v1/admin/status").json()
    assert (status["status"], status["draining"]) == ("draining", True)
    response = execute(api_client, lease, {"url": f"{target}/"})
    assert (response.status_code, response.json()) == (503, {"error": "draining"})
    issued = gate.operator_client.post(
        "/v1/leases", json.dumps(gate_client.lease_body(make_key())), content_type="application/json"
    )
    assert (issued.status_code, issued.json()) == (503, {"error": "draining"})
    assert gate.operator_client.get("/v1/approvals").status_code == 200  # admin endpoints stay up


# --- revoke-all and the epoch ---------------------------------------------------------------------------


def test_revoke_all_advances_the_epoch_and_voids_earlier_leases(api_client, gate, target):
    old = gate.lease()
    assert execute(api_client, old, {"url": f"{target}/"}).status_code == 200
    assert gate.operator_client.get("/v1/admin/epoch").json() == {"current_epoch": 0}
    assert gate.operator_client.post("/v1/admin/revoke-all").json() == {"previous_epoch": 0, "current_epoch": 1}
    assert gate.operator_client.post("/v1/admin/revoke-all").json() == {"previous_epoch": 1, "current_epoch": 2}
    assert gate.operator_client.get("/v1/admin/epoch").json() == {"current_epoch": 2}
    assert gate.operator_client.get("/v1/admin/status").json()["revocation_epoch"] == 2
    refused = execute(api_client, old, {"url": f"{target}/"})
    assert (refused.status_code, refused.json()["error"]) == (401, "invalid_lease")
    assert execute(api_client, gate.lease(), {"url": f"{target}/"}).status_code == 200
    revocations = [payload for event_type, payload in admin_events() if event_type == "GATE_ADMIN_REVOKE_ALL"]
    assert [(p["previous_epoch"], p["epoch"]) for p in revocations] == [(0, 1), (1, 2)]
    assert len(admin_events()) == 2  # reading the epoch records nothing


def test_an_operator_key_drives_the_controls_and_is_named_in_the_ledger(organization, api_client, gate):
    key = make_key()
    _, api_key = create_operator_key("ops-cli", jkt=key.jkt, organization=organization)
    for method, path in (("POST", "/v1/admin/revoke-all"), ("GET", "/v1/admin/status"), ("GET", "/metrics")):
        call = api_client.post if method == "POST" else api_client.get
        assert call(path, **operator_headers(key, api_key, method, path)).status_code == 200
    ((event_type, payload),) = admin_events()
    assert (event_type, payload["principal"]) == ("GATE_ADMIN_REVOKE_ALL", "ops-cli")


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("get", "/v1/admin/status"),
        ("post", "/v1/admin/drain"),
        ("post", "/v1/admin/revoke-all"),
        ("get", "/v1/admin/epoch"),
        ("get", "/metrics"),
    ],
)
def test_the_controls_are_for_operators_only(gate, client_with, method, path):
    anonymous = getattr(APIClient(), method)(path)
    assert anonymous.status_code == 401
    viewer = getattr(client_with(Role.PLATFORM_VIEWER), method)(path)
    assert (viewer.status_code, viewer.json()["error"]) == (403, "forbidden")
    assert admin_events() == []


# --- executions in flight ---------------------------------------------------------------------------------


class SlowTarget(BaseHTTPRequestHandler):
    """Answers once ``release`` is set."""

    arrived = threading.Event()
    release = threading.Event()

    def do_GET(self):
        SlowTarget.arrived.set()
        SlowTarget.release.wait(10)
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args):
        pass


@pytest.mark.django_db(transaction=True)
def test_in_flight_executions_are_counted_while_they_run(gate):
    SlowTarget.arrived.clear()
    SlowTarget.release.clear()
    listener = ThreadingHTTPServer(("127.0.0.1", 0), SlowTarget)
    threading.Thread(target=listener.serve_forever, daemon=True).start()
    lease = gate.lease()
    answers = []

    def call():
        from django.db import connection

        try:
            answers.append(execute(APIClient(), lease, {"url": f"http://127.0.0.1:{listener.server_address[1]}/slow"}))
        finally:
            connection.close()

    caller = threading.Thread(target=call)
    caller.start()
    try:
        assert SlowTarget.arrived.wait(10)
        assert gate.operator_client.get("/v1/admin/status").json()["in_flight_executions"] == 1
        assert gate.operator_client.post("/v1/admin/drain").json()["in_flight_executions"] == 1
    finally:
        SlowTarget.release.set()
        caller.join(20)
        listener.shutdown()
    assert answers[0].status_code == 200  # in flight when the drain began: it completes
    assert gate.operator_client.get("/v1/admin/status").json()["in_flight_executions"] == 0


# --- /metrics ------------------------------------------------------------------------------------------


def samples(text: str) -> dict[str, float]:
    values = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            values[name] = float(value)
    return values


def scrape(gate) -> dict[str, float]:
    response = gate.operator_client.get("/metrics")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("application/openmetrics-text")
    text = response.content.decode()
    assert text.endswith("# EOF\n")
    return samples(text)


def moved(before: dict, after: dict) -> dict[str, float]:
    return {name: after[name] - before.get(name, 0) for name in after if after[name] != before.get(name, 0)}


CALLS = 'mandate_gate_action_calls_total{action_id="%s",outcome="%s"}'


def test_metrics_follow_the_calls(api_client, gate, target):
    lease = gate.lease()
    before = scrape(gate)
    assert execute(api_client, lease, {"url": f"{target}/"}).status_code == 200
    delete = "/v1/actions/local_delete/execute"
    assert execute(api_client, lease, {"url": f"{target}/x"}, path=delete).status_code == 202
    post = "/v1/actions/http_post/execute"
    assert execute(api_client, lease, {"url": "https://httpbin.org/post", "body": "{}"}, path=post).status_code == 403
    assert execute(api_client, lease, {"url": f"{target}/"}, claims={"htm": "GET"}).status_code == 401
    assert execute(api_client, lease, {"url": "x"}, path="/v1/actions/made-up-1234/execute").status_code == 404
    after = scrape(gate)
    change = moved(before, after)
    assert change[CALLS % ("local_fetch", "allow")] == 1
    assert change[CALLS % ("local_delete", "pending_approval")] == 1
    assert change[CALLS % ("http_post", "deny")] == 1
    assert change[CALLS % ("", "deny")] == 2  # before the action is known: no caller-chosen label
    assert not any("made-up-1234" in name for name in after)
    assert change['mandate_gate_refusals_total{code="policy_denied"}'] == 1
    assert change['mandate_gate_refusals_total{code="invalid_dpop"}'] == 1
    assert change['mandate_gate_refusals_total{code="action_not_found"}'] == 1
    assert change["mandate_gate_dpop_rejections_total"] == 1
    assert change['mandate_gate_policy_decisions_total{result="allow"}'] == 1
    assert change['mandate_gate_policy_decisions_total{result="hold"}'] == 1
    assert change['mandate_gate_policy_decisions_total{result="deny"}'] == 1
    assert change["mandate_gate_provider_duration_seconds_count"] == 1
    assert change['mandate_gate_provider_duration_seconds_bucket{le="+Inf"}'] == 1
    assert after["mandate_gate_pending_approvals"] == 1
    assert after["mandate_gate_in_flight_executions"] == 0


def test_metrics_count_exhausted_budgets_and_evidence_write_failures(api_client, gate, target, monkeypatch):
    lease = gate.lease(budgets={"max_calls": 1})
    before = scrape(gate)
    assert execute(api_client, lease, {"url": f"{target}/"}).status_code == 200
    assert execute(api_client, lease, {"url": f"{target}/"}).status_code == 403

    refuse_receipts(monkeypatch)
    assert execute(api_client, gate.lease(), {"url": f"{target}/"}).status_code == 500
    change = moved(before, scrape(gate))
    assert change["mandate_gate_budget_exhausted_total"] == 1
    assert change["mandate_gate_audit_write_errors_total"] == 1
    assert change[CALLS % ("local_fetch", "error")] == 1


def test_metrics_text_is_well_formed(gate):
    text = gate.operator_client.get("/metrics").content.decode()
    families = re.findall(r"^# TYPE (\S+) (counter|gauge|histogram)$", text, re.MULTILINE)
    assert {name for name, _ in families} >= {
        "mandate_gate_action_calls",
        "mandate_gate_refusals",
        "mandate_gate_dpop_rejections",
        "mandate_gate_policy_decisions",
        "mandate_gate_budget_exhausted",
        "mandate_gate_provider_duration_seconds",
        "mandate_gate_audit_write_errors",
        "mandate_gate_in_flight_executions",
        "mandate_gate_pending_approvals",
        "mandate_gate_oldest_pending_approval_age_seconds",
        "mandate_gate_webhook_outbox_pending",
    }
    for line in text.splitlines():
        assert line.startswith("# ") or re.fullmatch(
            r'[a-z_]+(\{[a-z_]+="[^"\n]*"(,[a-z_]+="[^"\n]*")*\})? -?[0-9.e+]+', line
        ), line


# --- the hot path answers and counts alike ---------------------------------------------------------------


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_the_hot_path_answers_and_counts_as_djangos_view(gate, target, django_requests):
    import asyncio

    from django.db import connections

    from envelopes.gate.api.execute import EXECUTE
    from governance.asgi import django_application
    from governance.hotpath import HotPath

    lease = gate.lease()
    post = "/v1/actions/http_post/execute"
    calls = [
        (FETCH, {"url": f"{target}/"}),
        (post, {"url": "https://httpbin.org/post", "body": "{}"}),
        (FETCH, {"url": f"http://127.0.0.1:{free_port()}/"}),
    ]
    route = HotPath(django_application, [EXECUTE], threads=2)

    async def scenario():
        transport = httpx.ASGITransport(app=route)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            return [
                await client.post(path, json=body, headers=lease.http_headers("POST", path)) for path, body in calls
            ]

    before = scrape(gate)
    try:
        allowed, denied, failed = asyncio.run(scenario())
    finally:
        both = threading.Barrier(2)  # each pool thread hands its connection back

        def close():
            both.wait(timeout=10)
            connections.close_all()

        for future in [route.executor.submit(close) for _ in range(2)]:
            future.result()
        route.executor.shutdown()
    assert FETCH not in django_requests and post not in django_requests  # answered in front of Django
    assert allowed.status_code == 200 and allowed.json()["receipt_id"]
    assert (denied.status_code, denied.json()["error"]) == (403, "policy_denied") and denied.json()["deny_reason"]
    assert (failed.status_code, failed.json()) == (502, {"error": "action_execution_failed"})
    change = moved(before, scrape(gate))
    assert change[CALLS % ("local_fetch", "allow")] == 1
    assert change[CALLS % ("local_fetch", "error")] == 1
    assert change['mandate_gate_refusals_total{code="policy_denied"}'] == 1
    assert change['mandate_gate_refusals_total{code="action_execution_failed"}'] == 1
    assert [e.payload["decision"] for e in AuditEvent.objects.filter(event_type="GATE_ACTION_CALL")].count("deny") == 1


__all__ = ["gate", "target", "Target"]
