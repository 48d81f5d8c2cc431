"""The gate's operator endpoints: the reference's bodies, statuses and error codes, operator
roles, the rate limits, and a control-plane audit record plus a ledger event for every change
(and none for a refused one)."""

import pytest
from django.test import override_settings

from controlplane.api.gate import base
from controlplane.gate import audit
from controlplane.gate.registry import registry
from controlplane.models import PolicyState
from evidence.models import AuditEvent, ControlPlaneAuditRecord
from governance.choices import Role
from tests.gate_actions import copy_actions, http_manifest, write_manifest

pytestmark = pytest.mark.django_db


@pytest.fixture
def operator(client_with):
    return client_with(Role.PLATFORM_OPERATOR)


def post(client, path, body=None):
    return client.post(path, body, format="json")


def delete(client, path, body=None):
    return client.delete(path, body, format="json")


def answer(response):
    return response.status_code, response.json()


def gate_events():
    return list(AuditEvent.objects.filter(chain_id=audit.CHAIN).order_by("ledger_seq"))


# --- who may call --------------------------------------------------------------------------------------

OPERATOR_ENDPOINTS = [
    ("get", "/v1/admin/policy"),
    ("get", "/v1/admin/policy/agent-1"),
    ("post", "/v1/admin/policy/grant"),
    ("post", "/v1/admin/policy/revoke"),
    ("post", "/v1/admin/policy/allowlist"),
    ("delete", "/v1/admin/policy/allowlist"),
    ("get", "/v1/admin/domains"),
    ("post", "/v1/admin/domains"),
    ("delete", "/v1/admin/domains"),
    ("delete", "/v1/admin/domains/clear"),
    ("get", "/v1/admin/paths"),
    ("post", "/v1/admin/paths"),
    ("delete", "/v1/admin/paths"),
    ("delete", "/v1/admin/paths/clear"),
    ("post", "/v1/admin/reload"),
]


@pytest.mark.parametrize(("method", "path"), OPERATOR_ENDPOINTS)
def test_operator_endpoints_need_an_operator(api_client, client_with, method, path):
    assert answer(getattr(api_client, method)(path)) == (401, {"error": "unauthenticated"})
    viewer = client_with(Role.PLATFORM_VIEWER)
    status, body = answer(getattr(viewer, method)(path))
    assert (status, body["error"]) == (403, "forbidden")
    assert not gate_events()


def test_an_admin_is_an_operator_too(client_with):
    assert client_with(Role.PLATFORM_ADMIN).get("/v1/admin/policy").status_code == 200


# --- policy ----------------------------------------------------------------------------------------------


def test_grant_answers_the_principal_with_derived_sinks(operator):
    response = post(
        operator, "/v1/admin/policy/grant", {"principal": "agent-support", "actions": ["http_fetch", "http_post"]}
    )
    assert answer(response) == (
        200,
        {"principal": "agent-support", "actions": ["http_fetch", "http_post"], "sinks": ["http_read", "http_write"]},
    )


def test_the_policy_lists_every_principal(operator):
    post(operator, "/v1/admin/policy/grant", {"principal": "agent-ops", "actions": ["http_fetch", "http_delete"]})
    post(operator, "/v1/admin/policy/grant", {"principal": "*", "actions": ["http_fetch"]})
    post(operator, "/v1/admin/policy/allowlist", {"action_id": "http_delete", "agent_id": "agent-ops"})
    status, body = answer(operator.get("/v1/admin/policy"))
    assert status == 200
    assert body == {
        "policy_version": str(PolicyState.objects.get().policy_version),
        "principals": {
            "*": {"actions": ["http_fetch"], "sinks": ["http_read"], "inherits_wildcard": False},
            "agent-ops": {
                "actions": ["http_delete", "http_fetch"],
                "sinks": ["http_delete", "http_read"],
                "inherits_wildcard": False,
            },
        },
        "allowlist": {"http_delete": {"agent-ops": True}},
    }


def test_a_principal_comes_with_a_risk_breakdown(operator):
    post(
        operator,
        "/v1/admin/policy/grant",
        {"principal": "agent-support", "actions": ["http_fetch", "http_post", "http_delete"]},
    )
    assert answer(operator.get("/v1/admin/policy/agent-support")) == (
        200,
        {
            "principal": "agent-support",
            "actions": ["http_delete", "http_fetch", "http_post"],
            "sinks": ["http_delete", "http_read", "http_write"],
            "inherits_wildcard": False,
            "risk_breakdown": {"low": ["http_fetch"], "medium": ["http_post"], "high": ["http_delete"], "critical": []},
        },
    )


def test_an_unknown_principal_is_404(operator):
    assert answer(operator.get("/v1/admin/policy/agent-none")) == (404, {"error": "principal_not_found"})
    assert answer(operator.get("/v1/admin/policy/grant")) == (404, {"error": "principal_not_found"})  # GET: a name


def test_revoke_answers_what_remains_and_removes_an_empty_principal(operator):
    post(operator, "/v1/admin/policy/grant", {"principal": "agent-support", "actions": ["http_fetch", "http_post"]})
    assert answer(
        post(operator, "/v1/admin/policy/revoke", {"principal": "agent-support", "actions": ["http_post"]})
    ) == (
        200,
        {"principal": "agent-support", "actions": ["http_fetch"], "sinks": ["http_read"]},
    )
    assert answer(
        post(operator, "/v1/admin/policy/revoke", {"principal": "agent-support", "actions": ["http_fetch"]})
    ) == (
        200,
        {"principal": "agent-support", "actions": [], "sinks": []},
    )
    assert operator.get("/v1/admin/policy/agent-support").status_code == 404


def test_inheriting_the_wildcard_is_set_on_a_grant(operator):
    post(
        operator, "/v1/admin/policy/grant", {"principal": "agent-2", "actions": ["fs_read"], "inherits_wildcard": True}
    )
    assert operator.get("/v1/admin/policy/agent-2").json()["inherits_wildcard"] is True


@pytest.mark.parametrize(
    ("path", "body", "status", "error"),
    [
        ("grant", {"principal": "agent-1", "actions": ["github_read"]}, 400, "unknown_action"),
        ("grant", {"principal": "", "actions": ["http_fetch"]}, 400, "invalid_principal"),
        ("grant", {"principal": "agent 1", "actions": ["http_fetch"]}, 400, "invalid_principal"),
        ("grant", {"principal": "a" * 254, "actions": ["http_fetch"]}, 400, "invalid_principal"),
        ("grant", {"principal": "agent-1", "actions": []}, 400, "empty_actions"),
        ("grant", {"principal": "agent-1", "actions": ["http_fetch"] * 101}, 400, "too_many_actions"),
        ("grant", {"principal": "agent-1", "actions": ["http/fetch"]}, 400, "invalid_action_id"),
        ("grant", {"principal": "agent-1", "actions": ["http_fetch"], "sinks": ["fs_write"]}, 400, "invalid_request"),
        ("grant", {"principal": "agent-1"}, 400, "invalid_request"),
        ("grant", {"principal": 7, "actions": ["http_fetch"]}, 400, "invalid_request"),
        ("grant", ["agent-1"], 400, "invalid_request"),
        ("grant", {"principal": "*", "actions": ["http_fetch"], "inherits_wildcard": True}, 400, "invalid_request"),
        ("revoke", {"principal": "agent-1", "actions": []}, 400, "empty_actions"),
        ("revoke", {"principal": "agent/1", "actions": ["http_fetch"]}, 400, "invalid_principal"),
    ],
)
def test_policy_changes_refuse_bad_bodies_and_record_nothing(operator, path, body, status, error):
    registry()  # the first load is recorded too
    events = len(gate_events())
    response = post(operator, f"/v1/admin/policy/{path}", body)
    assert (response.status_code, response.json()["error"]) == (status, error)
    assert set(response.json()) <= {"error", "detail"}
    assert len(gate_events()) == events
    assert not ControlPlaneAuditRecord.objects.filter(resource_kind="gate_policy").exists()


def test_a_malformed_body_is_400_invalid_request(operator):
    response = operator.post("/v1/admin/policy/grant", "{not json", content_type="application/json")
    assert (response.status_code, response.json()["error"]) == (400, "invalid_request")


# --- allowlist -----------------------------------------------------------------------------------------------


def test_the_allowlist_adds_and_removes_entries(operator):
    entry = {"action_id": "http_fetch", "agent_id": "agent-ops"}
    assert answer(post(operator, "/v1/admin/policy/allowlist", entry)) == (200, {"ok": True, **entry})
    assert operator.get("/v1/admin/policy").json()["allowlist"] == {"http_fetch": {"agent-ops": True}}
    assert answer(delete(operator, "/v1/admin/policy/allowlist", entry)) == (200, {"ok": True, **entry})
    assert operator.get("/v1/admin/policy").json()["allowlist"] == {}
    assert answer(delete(operator, "/v1/admin/policy/allowlist", entry)) == (
        404,
        {"error": "allowlist_entry_not_found"},
    )


@pytest.mark.parametrize(
    ("method", "body", "status", "error"),
    [
        ("post", {"action_id": "", "agent_id": "agent-ops"}, 400, "invalid_input"),
        ("post", {"action_id": "http_fetch", "agent_id": "agent ops"}, 400, "invalid_input"),
        ("post", {"action_id": "http_fetch", "agent_id": "a" * 129}, 400, "invalid_input"),
        ("post", {"action_id": "github_read", "agent_id": "agent-ops"}, 404, "action_not_found"),
        ("delete", {"action_id": "http_fetch", "agent_id": "agent;ops"}, 400, "invalid_input"),
    ],
)
def test_allowlist_errors(operator, method, body, status, error):
    response = (post if method == "post" else delete)(operator, "/v1/admin/policy/allowlist", body)
    assert (response.status_code, response.json()["error"]) == (status, error)


# --- domains and paths ---------------------------------------------------------------------------------------


def test_domains_are_learned_listed_and_forgotten(operator, client_with):
    body = {"action_id": "http_fetch", "domain": "API.NewService.com"}
    assert answer(post(operator, "/v1/admin/domains", body)) == (
        200,
        {"domain": "api.newservice.com", "action_id": "http_fetch"},
    )
    post(operator, "/v1/admin/domains", {"action_id": "http_post", "domain": "hooks.example.com"})
    listed = operator.get("/v1/admin/domains").json()["domains"]
    assert [(d["domain"], d["action_id"], d["source"], d["approval_id"]) for d in listed] == [
        ("api.newservice.com", "http_fetch", "admin", None),
        ("hooks.example.com", "http_post", "admin", None),
    ]
    assert listed[0]["added_by"].startswith("person") and listed[0]["added_at"].endswith("Z")
    assert [d["domain"] for d in operator.get("/v1/admin/domains?action=http_post").json()["domains"]] == [
        "hooks.example.com"
    ]
    assert answer(delete(operator, "/v1/admin/domains", body)) == (200, {"removed": True})
    assert answer(delete(operator, "/v1/admin/domains", body)) == (200, {"removed": False})


@pytest.mark.parametrize(
    ("body", "status", "error"),
    [
        ({"action_id": "http_fetch", "domain": "192.168.1.1"}, 400, "invalid_domain"),
        ({"action_id": "http_fetch", "domain": "localhost"}, 400, "invalid_domain"),
        ({"action_id": "http_fetch", "domain": "intranet"}, 400, "invalid_domain"),
        ({"action_id": "http_fetch", "domain": "*.com"}, 400, "invalid_domain"),
        ({"action_id": "http_fetch", "domain": "httpbin.org"}, 409, "domain_already_exists"),
        ({"action_id": "github_read", "domain": "api.example.com"}, 404, "action_not_found"),
        ({"action_id": "http_fetch"}, 400, "invalid_request"),
    ],
)
def test_domain_errors(operator, body, status, error):
    response = post(operator, "/v1/admin/domains", body)
    assert (response.status_code, response.json()["error"]) == (status, error)


@pytest.mark.parametrize(
    "call",
    [
        ("get", "/v1/admin/domains?action=a%00b"),
        ("delete", "/v1/admin/domains/clear?action=%00"),
        ("get", "/v1/admin/paths?action=a%01b"),
        ("delete", "/v1/admin/paths/clear?action=%00"),
    ],
)
def test_an_action_filter_with_control_characters_is_400(operator, call):
    method, path = call
    response = getattr(operator, method)(path)
    assert response.status_code == 400, response.content
    assert response.json()["error"] == "invalid_request"
    assert response.json()["reason"] == "action holds control characters"


def test_a_domain_learned_twice_is_409(operator):
    body = {"action_id": "http_fetch", "domain": "api.newservice.com"}
    post(operator, "/v1/admin/domains", body)
    assert answer(post(operator, "/v1/admin/domains", body)) == (409, {"error": "domain_already_exists"})


def test_clearing_domains_all_or_per_action(operator):
    post(operator, "/v1/admin/domains", {"action_id": "http_fetch", "domain": "a.example.com"})
    post(operator, "/v1/admin/domains", {"action_id": "http_post", "domain": "b.example.com"})
    assert answer(operator.delete("/v1/admin/domains/clear?action=http_post")) == (
        200,
        {"cleared": True, "deleted_count": 1},
    )
    assert answer(operator.delete("/v1/admin/domains/clear")) == (200, {"cleared": True, "deleted_count": 1})
    assert operator.get("/v1/admin/domains").json() == {"domains": []}


def test_paths_are_learned_listed_and_forgotten(operator):
    assert answer(post(operator, "/v1/admin/paths", {"action_id": "fs_read", "path": "./reports/**"})) == (
        200,
        {"path": "reports/**", "action_id": "fs_read"},
    )
    assert answer(post(operator, "/v1/admin/paths", {"action_id": "fs_read", "path_glob": "exports/*.csv"})) == (
        200,
        {"path": "exports/*.csv", "action_id": "fs_read"},
    )
    listed = operator.get("/v1/admin/paths").json()["paths"]
    assert [(p["path"], p["action_id"], p["source"]) for p in listed] == [
        ("exports/*.csv", "fs_read", "admin"),
        ("reports/**", "fs_read", "admin"),
    ]
    assert answer(delete(operator, "/v1/admin/paths", {"action_id": "fs_read", "path": "reports/**"})) == (
        200,
        {"removed": True},
    )
    assert answer(operator.delete("/v1/admin/paths/clear")) == (200, {"cleared": True, "deleted_count": 1})


@pytest.mark.parametrize(
    ("body", "status", "error"),
    [
        ({"action_id": "fs_read", "path": "/data/reports"}, 400, "invalid_path"),
        ({"action_id": "fs_read", "path": "../outside/**"}, 400, "invalid_path"),
        ({"action_id": "fs_read", "path": "**"}, 400, "invalid_path"),
        ({"action_id": "fs_read", "path": "app/.env"}, 400, "invalid_path"),
        ({"action_id": "http_fetch", "path": "docs/**"}, 400, "invalid_path"),
        ({"action_id": "fs_read", "path": "docs/**"}, 409, "path_already_exists"),
        ({"action_id": "nope", "path": "docs/**"}, 404, "action_not_found"),
        ({"action_id": "fs_read", "path": "a/**", "path_glob": "b/**"}, 400, "invalid_request"),
    ],
)
def test_path_errors(operator, body, status, error):
    response = post(operator, "/v1/admin/paths", body)
    assert (response.status_code, response.json()["error"]) == (status, error)


# --- reload ----------------------------------------------------------------------------------------------------


def test_reload_answers_what_it_loaded(operator):
    status, body = answer(post(operator, "/v1/admin/reload"))
    assert status == 200
    assert set(body) == {"manifests_loaded", "policy_reloaded", "reloaded_at"}
    assert body["manifests_loaded"] == 7 and body["policy_reloaded"] is True
    assert body["reloaded_at"].endswith("Z")


def test_a_failed_reload_is_500_reload_failed_with_nothing_else(operator, tmp_path):
    registry()
    directory = copy_actions(tmp_path)
    write_manifest(directory, "broken.yaml", http_manifest("broken", risk_level="extreme"))
    with override_settings(MANDATE_ACTIONS_DIR=directory):
        assert answer(post(operator, "/v1/admin/reload")) == (500, {"error": "reload_failed"})
        assert "broken" not in registry()
    failed = AuditEvent.objects.get(chain_id=audit.CHAIN, event_type="GATE_RELOAD_FAILED")
    assert "broken.yaml: risk_level" in failed.payload["problem"]


# --- every change is recorded --------------------------------------------------------------------------------------

CHANGES = [
    (
        "post",
        "/v1/admin/policy/grant",
        {"principal": "agent-1", "actions": ["fs_read"]},
        "gate_policy",
        "grant",
        "GATE_POLICY_GRANTED",
    ),
    (
        "post",
        "/v1/admin/policy/revoke",
        {"principal": "agent-1", "actions": ["http_fetch"]},
        "gate_policy",
        "revoke",
        "GATE_POLICY_REVOKED",
    ),
    (
        "post",
        "/v1/admin/policy/allowlist",
        {"action_id": "fs_read", "agent_id": "agent-1"},
        "gate_allowlist",
        "add",
        "GATE_ALLOWLIST_ADDED",
    ),
    (
        "delete",
        "/v1/admin/policy/allowlist",
        {"action_id": "http_fetch", "agent_id": "agent-1"},
        "gate_allowlist",
        "remove",
        "GATE_ALLOWLIST_REMOVED",
    ),
    (
        "post",
        "/v1/admin/domains",
        {"action_id": "http_fetch", "domain": "b.example.com"},
        "gate_domain",
        "add",
        "GATE_DOMAIN_LEARNED",
    ),
    (
        "delete",
        "/v1/admin/domains",
        {"action_id": "http_fetch", "domain": "a.example.com"},
        "gate_domain",
        "remove",
        "GATE_DOMAIN_REMOVED",
    ),
    ("delete", "/v1/admin/domains/clear", None, "gate_domain", "clear", "GATE_DOMAINS_CLEARED"),
    ("post", "/v1/admin/paths", {"action_id": "fs_read", "path": "b/**"}, "gate_path", "add", "GATE_PATH_LEARNED"),
    ("delete", "/v1/admin/paths", {"action_id": "fs_read", "path": "a/**"}, "gate_path", "remove", "GATE_PATH_REMOVED"),
    ("delete", "/v1/admin/paths/clear", None, "gate_path", "clear", "GATE_PATHS_CLEARED"),
    ("post", "/v1/admin/reload", None, "gate_catalogue", "reload", "GATE_RELOADED"),
]


@pytest.mark.parametrize(
    ("method", "path", "body", "kind", "action", "event_type"), CHANGES, ids=[c[5] for c in CHANGES]
)
def test_every_change_writes_an_audit_record_and_a_ledger_event(
    make_person, client_with, method, path, body, kind, action, event_type
):
    from rest_framework.test import APIClient

    from governance.services.tokens import issue_token

    person = make_person(roles=[Role.PLATFORM_OPERATOR], username="olivia")
    _, secret = issue_token(person, "test", [Role.PLATFORM_OPERATOR])
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
    # What the changes act on.
    post(client, "/v1/admin/policy/grant", {"principal": "agent-1", "actions": ["http_fetch", "http_post"]})
    post(client, "/v1/admin/policy/allowlist", {"action_id": "http_fetch", "agent_id": "agent-1"})
    post(client, "/v1/admin/domains", {"action_id": "http_fetch", "domain": "a.example.com"})
    post(client, "/v1/admin/paths", {"action_id": "fs_read", "path": "a/**"})
    events_before = AuditEvent.objects.filter(event_type=event_type).count()
    records_before = ControlPlaneAuditRecord.objects.filter(resource_kind=kind, action=action).count()

    response = (post if method == "post" else delete)(client, path, body)

    assert response.status_code == 200
    event = AuditEvent.objects.filter(chain_id=audit.CHAIN, event_type=event_type).order_by("-ledger_seq").first()
    assert AuditEvent.objects.filter(event_type=event_type).count() == events_before + 1
    assert (event.performer_type, event.performer_id, event.payload["actor"]) == ("user", str(person.pk), "olivia")
    record = ControlPlaneAuditRecord.objects.filter(resource_kind=kind, action=action).order_by("-occurred_at").first()
    assert ControlPlaneAuditRecord.objects.filter(resource_kind=kind, action=action).count() == records_before + 1
    assert record.actor == "olivia"
    assert str(record.organization_id) == str(person.organization_id)
    if body and "action_id" in body:
        assert event.payload["action_id"] == body["action_id"]
    if body and "principal" in body:
        assert event.payload["principal"] == body["principal"]


def test_gate_changes_appear_in_the_control_plane_audit(operator):
    post(operator, "/v1/admin/policy/grant", {"principal": "agent-1", "actions": ["http_fetch"]})
    entries = operator.get("/v1/controlplane/audit?kind=gate_policy").json()
    entries = entries.get("entries", entries) if isinstance(entries, dict) else entries
    assert any(entry["resource_id"] == "agent-1" for entry in entries)


# --- rate limits --------------------------------------------------------------------------------------------------


def test_operator_writes_beyond_the_rate_are_429(operator, monkeypatch):
    base.WRITE_BUCKET.reset()
    base.READ_BUCKET.reset()
    body = {"principal": "agent-1", "actions": ["http_fetch"]}
    with override_settings(MANDATE_GATE_OPERATOR_WRITE_RATE=2, MANDATE_GATE_OPERATOR_READ_RATE=3):
        statuses = [post(operator, "/v1/admin/policy/grant", body).status_code for _ in range(3)]
        assert statuses == [200, 200, 429]
        assert post(operator, "/v1/admin/policy/grant", body).json() == {"error": "rate_limit_exceeded"}
        reads = [operator.get("/v1/admin/policy").status_code for _ in range(4)]
        assert reads == [200, 200, 200, 429]
