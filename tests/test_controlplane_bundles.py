import threading

import pytest
from django.db import connection, connections
from django.test.utils import CaptureQueriesContext
from rest_framework.test import APIClient

from controlplane.models import Agent, BusinessService, Grant, Policy, Process, Profile, Surface
from controlplane.services.bundles import apply_bundle, plan_bundle
from evidence.models import AdminAuditRecord, ControlPlaneAuditRecord
from governance.choices import Role
from governance.services.tokens import issue_token
from tests.factories import DEMO_BUNDLE as DEMO

pytestmark = pytest.mark.django_db

YAML = "application/yaml"


def doc(kind, id_, spec, name=None):
    lines = [f"apiVersion: midas.accept.io/v1\nkind: {kind}\nmetadata:\n  id: {id_}\n"]
    if name:
        lines.append(f"  name: {name}\n")
    lines.append("spec:\n")
    for key, value in spec.items():
        lines.append(f"  {key}: {value}\n")
    return "".join(lines)


def bundle(*docs):
    return "---\n".join(docs).encode()


BS = doc("BusinessService", "bs-a", {"service_type": "internal"})
PROC = doc("Process", "proc-a", {"business_service_id": "bs-a"})
SURF = doc("Surface", "surf-a", {"process_id": "proc-a", "minimum_confidence": 0.5}, name="Surface A")
AGENT = doc("Agent", "agent-a", {"type": "llm_agent"})
PROF = doc("Profile", "prof-a", {"surface_id": "surf-a", "authority": "{decision_confidence_threshold: 0.8}"})
GRANT = doc("Grant", "grant-a", {"agent_id": "agent-a", "profile_id": "prof-a"})


@pytest.fixture
def operator(client_with):
    return client_with(Role.PLATFORM_OPERATOR)


def post(client, path, body, content_type=YAML):
    return client.post(path, data=body, content_type=content_type)


def test_applying_the_demo_bundle_creates_everything_in_dependency_order(operator, organization):
    response = post(operator, "/v1/controlplane/apply", DEMO)
    assert response.status_code == 200
    body = response.json()
    assert body["validation_errors"] == []
    assert {r["status"] for r in body["results"]} == {"created"}
    assert len(body["results"]) == 17
    surface = Surface.objects.get(organization=organization, key="surf-payment-release")
    assert (surface.version, surface.status, surface.process.key) == (1, "review", "proc-payment-release")
    assert surface.required_field_names == ["account_id", "destination_country"]
    profile = Profile.objects.get(key="prof-payments-standard")
    assert profile.consequence_threshold == {"type": "monetary", "amount": 10000.0, "currency": "GBP"}
    assert (profile.version, profile.status) == (1, "review")  # whatever lifecycle.status says
    assert Agent.objects.get(key="agent-loan-copilot").type == "ai"  # copilot → ai
    assert Agent.objects.get(key="agent-payments-prod").type == "service"  # automation → service
    assert Grant.objects.get(key="grant-payments-agent-standard").agent.key == "agent-payments-prod"
    assert BusinessService.objects.get(key="bs-payments").capabilities.get().key == "cap-money-movement"
    assert ControlPlaneAuditRecord.objects.filter(organization_id=organization.pk).count() == 17


def test_reapplying_an_identical_bundle_is_unchanged(operator):
    post(operator, "/v1/controlplane/apply", DEMO)
    body = post(operator, "/v1/controlplane/apply", DEMO).json()
    assert {r["status"] for r in body["results"]} == {"unchanged"}
    assert Surface.objects.count() == 2


def test_changed_surface_creates_a_review_version_then_conflicts_while_in_review(operator, organization):
    post(operator, "/v1/controlplane/apply", bundle(BS, PROC, SURF))
    Surface.objects.filter(key="surf-a").update(status="active")
    changed = doc("Surface", "surf-a", {"process_id": "proc-a", "minimum_confidence": 0.8}, name="Surface A2")

    plan = post(operator, "/v1/controlplane/plan", bundle(changed)).json()
    entry = plan["entries"][0]
    assert entry["action"] == "create" and entry["create_kind"] == "new_version" and entry["version"] == 2
    assert {"field": "spec.minimum_confidence", "before": 0.5, "after": 0.8} in entry["diff"]["fields"]
    assert {"field": "spec.name", "before": "Surface A", "after": "Surface A2"} in entry["diff"]["fields"]

    result = post(operator, "/v1/controlplane/apply", bundle(changed)).json()["results"]
    assert result == [{"kind": "Surface", "id": "surf-a", "status": "created", "version": 2}]
    assert Surface.objects.get(key="surf-a", version=2).status == "review"
    assert Surface.objects.get(key="surf-a", version=1).status == "active"

    again = doc("Surface", "surf-a", {"process_id": "proc-a", "minimum_confidence": 0.9})
    result = post(operator, "/v1/controlplane/apply", bundle(again)).json()["results"]
    assert result[0]["status"] == "conflict"
    plan = post(operator, "/v1/controlplane/plan", bundle(again)).json()["entries"][0]
    assert plan["action"] == "conflict" and "review" in plan["message"]


def test_changed_agent_grant_or_structure_is_a_conflict(operator):
    post(operator, "/v1/controlplane/apply", bundle(BS, PROC, SURF, AGENT, PROF, GRANT))
    changed = bundle(
        doc("Agent", "agent-a", {"type": "rpa"}),
        doc("BusinessService", "bs-a", {"service_type": "technical"}),
        doc("Grant", "grant-a", {"agent_id": "agent-a", "profile_id": "prof-a", "granted_by": "someone"}),
    )
    results = post(operator, "/v1/controlplane/apply", changed).json()["results"]
    assert [r["status"] for r in results] == ["conflict", "conflict", "conflict"]
    assert Agent.objects.get(key="agent-a").type == "ai"


def test_an_invalid_document_writes_nothing_and_explains_each_error(operator):
    bad_surface = doc("Surface", "surf-b", {"process_id": "proc-a", "minimum_confidence": 1.5})
    bad_id = doc("Agent", "Agent_UPPER", {"type": "ai"})
    response = post(operator, "/v1/controlplane/apply", bundle(BS, PROC, bad_surface, bad_id))
    assert response.status_code == 200
    body = response.json()
    assert {
        "kind": "Surface",
        "id": "surf-b",
        "field": "spec.minimum_confidence",
        "message": "minimum_confidence must be between 0.0 and 1.0",
    } in body["validation_errors"]
    assert any(e["field"] == "metadata.id" for e in body["validation_errors"])
    assert {"kind": "Surface", "id": "surf-b", "status": "error"} in body["results"]
    assert not BusinessService.objects.exists() and not Process.objects.exists()


def test_unresolved_reference_is_invalid_but_persisted_state_satisfies_it(operator):
    body = post(operator, "/v1/controlplane/plan", bundle(PROC)).json()
    assert body["entries"][0]["action"] == "invalid"
    assert body["entries"][0]["decision_source"] == "validation"
    assert body["validation_errors"][0]["field"] == "spec.business_service_id"
    assert body["would_apply"] is False and body["invalid_count"] == 1

    post(operator, "/v1/controlplane/apply", bundle(BS))
    entry = post(operator, "/v1/controlplane/plan", bundle(PROC)).json()["entries"][0]
    assert (entry["action"], entry["decision_source"]) == ("create", "persisted_state")
    entry = post(operator, "/v1/controlplane/plan", bundle(BS, PROC.replace("proc-a", "proc-b"))).json()
    assert entry["entries"][1]["decision_source"] == "persisted_state"


def test_plan_never_writes_and_reports_totals(operator):
    body = post(operator, "/v1/controlplane/plan", bundle(BS, PROC, SURF)).json()
    assert (body["would_apply"], body["create_count"], body["invalid_count"], body["conflict_count"]) == (True, 3, 0, 0)
    assert [e["document_index"] for e in body["entries"]] == [1, 2, 3]
    assert body["entries"][1]["decision_source"] == "bundle_dependency"
    assert not BusinessService.objects.exists()
    assert not ControlPlaneAuditRecord.objects.exists()


def test_nothing_to_create_means_would_apply_false(operator):
    post(operator, "/v1/controlplane/apply", bundle(BS))
    assert post(operator, "/v1/controlplane/plan", bundle(BS)).json()["would_apply"] is False


def test_reference_to_a_deprecated_process_warns_without_blocking(operator):
    post(operator, "/v1/controlplane/apply", bundle(BS, PROC))
    Process.objects.filter(key="proc-a").update(status="deprecated")
    body = post(operator, "/v1/controlplane/plan", bundle(SURF)).json()
    entry = body["entries"][0]
    assert entry["action"] == "create" and body["would_apply"] is True
    assert entry["warnings"] == [
        {
            "code": "REF_PROCESS_TERMINAL",
            "severity": "warning",
            "message": 'referenced process "proc-a" is deprecated; referrer will be linked to a terminal-state process',
            "field": "spec.process_id",
            "related_kind": "Process",
            "related_id": "proc-a",
        }
    ]


def test_profile_versions_after_the_first_start_in_review(operator):
    post(operator, "/v1/controlplane/apply", bundle(BS, PROC, SURF, PROF))
    assert Profile.objects.get(key="prof-a").status == "review"
    Profile.objects.filter(key="prof-a").update(status="active")
    changed = doc("Profile", "prof-a", {"surface_id": "surf-a", "lifecycle": "{status: active}"})
    results = post(operator, "/v1/controlplane/apply", bundle(changed)).json()["results"]
    assert results == [{"kind": "Profile", "id": "prof-a", "status": "created", "version": 2}]
    assert Profile.objects.get(key="prof-a", version=2).status == "review"


def test_policy_documents_must_compile(operator):
    good = "    package p.ok\n    allow := true\n"
    bad = "    package p.bad\n    allow if {\n"
    body = bundle(
        doc("Policy", "pol-ok", {"package": "p.ok", "source": "|\n" + good}),
        doc("Policy", "pol-bad", {"package": "p.bad", "source": "|\n" + bad}),
    )
    result = post(operator, "/v1/controlplane/apply", body).json()
    assert [e["field"] for e in result["validation_errors"]] == ["spec.source"]
    assert "does not compile" in result["validation_errors"][0]["message"]
    assert not Policy.objects.exists()


@pytest.mark.parametrize("content_type", ["application/json", "text/plain", "multipart/form-data; boundary=x"])
def test_wrong_content_type_is_415(operator, content_type):
    response = post(operator, "/v1/controlplane/apply", BS.encode(), content_type=content_type)
    assert response.status_code == 415
    assert set(response.json()) == {"error"}


@pytest.mark.parametrize("content_type", ["application/yaml", "application/x-yaml", "text/yaml"])
def test_every_yaml_media_type_is_accepted(operator, content_type):
    assert post(operator, "/v1/controlplane/plan", BS.encode(), content_type=content_type).status_code == 200


@pytest.mark.parametrize(
    "body",
    [b"kind: [unclosed", b"\tkind: x\n\tbad", b"", b"---\n---\n", b"\xff\xfe", b"a: &a [*a, *a]"],
)
def test_malformed_or_empty_yaml_is_400(operator, body):
    for path in ("/v1/controlplane/plan", "/v1/controlplane/apply"):
        response = post(operator, path, body)
        assert response.status_code == 400, (path, body, response.content)
        assert set(response.json()) == {"error"}


def test_alias_bomb_is_refused_not_expanded(operator):
    lines = ['a0: &a0 ["x","x","x","x","x","x","x","x","x","x"]']
    for i in range(1, 9):
        lines.append(f"a{i}: &a{i} [" + ",".join([f"*a{i - 1}"] * 10) + "]")
    response = post(operator, "/v1/controlplane/plan", "\n".join(lines).encode())
    assert response.status_code == 400
    assert "too large" in response.json()["error"]


def test_bundle_over_10_mib_is_400(operator):
    response = post(operator, "/v1/controlplane/apply", b"#" * (10 * 1024 * 1024 + 1))
    assert response.status_code == 400
    assert "too large" in response.json()["error"]


def test_non_mapping_documents_and_unknown_kinds_are_validation_errors(operator):
    body = b"- just\n- a list\n---\napiVersion: v9\nkind: Widget\nmetadata: {id: w}\n"
    result = post(operator, "/v1/controlplane/plan", body).json()
    assert [e["action"] for e in result["entries"]] == ["invalid", "invalid"]
    fields = {e["field"] for e in result["validation_errors"]}
    assert {"apiVersion", "kind"} <= fields


def test_duplicate_ids_and_parent_cycles_are_invalid(operator):
    c1 = doc("Capability", "cap-1", {"parent_capability_id": "cap-2"})
    c2 = doc("Capability", "cap-2", {"parent_capability_id": "cap-1"})
    body = post(operator, "/v1/controlplane/plan", bundle(BS, BS, c1, c2)).json()
    assert [e["action"] for e in body["entries"]] == ["create", "invalid", "invalid", "invalid"]


def test_capability_and_process_parents_link_within_a_bundle(operator):
    parent = doc("Capability", "cap-parent", {})
    child = doc("Capability", "cap-child", {"parent_capability_id": "cap-parent"})
    sub = doc("Process", "proc-sub", {"business_service_id": "bs-a", "parent_process_id": "proc-a"})
    assert post(operator, "/v1/controlplane/apply", bundle(child, parent, BS, sub, PROC)).status_code == 200
    from controlplane.models import Capability

    assert Capability.objects.get(key="cap-child").parent.key == "cap-parent"
    assert Process.objects.get(key="proc-sub").parent.key == "proc-a"


def test_apply_needs_operator_or_admin(client_with, api_client):
    response = post(client_with(Role.PLATFORM_VIEWER), "/v1/controlplane/apply", BS.encode())
    assert response.status_code == 403
    assert response.json() == {"error": "forbidden", "required_permission": "controlplane:apply"}
    assert post(api_client, "/v1/controlplane/apply", BS.encode()).status_code == 401
    assert post(client_with(Role.PLATFORM_ADMIN), "/v1/controlplane/apply", BS.encode()).status_code == 200


def test_each_apply_request_is_recorded_in_the_admin_audit(operator):
    post(
        operator,
        "/v1/controlplane/apply",
        bundle(BS, PROC),
    )
    post(operator, "/v1/controlplane/apply", bundle(BS, PROC))
    records = list(AdminAuditRecord.objects.filter(action="apply.invoked").order_by("occurred_at"))
    assert len(records) == 2
    assert records[0].details == {"bundle_bytes": len(bundle(BS, PROC)), "created_count": 2}
    assert records[1].details["unchanged_count"] == 2
    assert records[0].required_permission == "controlplane:apply" and records[0].target_type == "bundle"


def test_organizations_do_not_see_each_others_declarations(operator, make_person):
    from governance.services.people import create_person, ensure_organization

    post(operator, "/v1/controlplane/apply", bundle(BS))
    other_org = ensure_organization("other", "Other")
    stranger = create_person(other_org, "stranger")
    _, secret = issue_token(stranger, "t", [Role.PLATFORM_OPERATOR])
    other = APIClient()
    other.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
    assert post(other, "/v1/controlplane/apply", bundle(BS)).json()["results"][0]["status"] == "created"
    assert BusinessService.objects.filter(key="bs-a").count() == 2


def test_a_failed_write_rolls_back_the_whole_apply(organization, monkeypatch):
    def fail(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(Grant.objects.__class__, "bulk_create", fail)
    with pytest.raises(RuntimeError):
        apply_bundle(organization, bundle(BS, PROC, SURF, AGENT, PROF, GRANT), actor="t")
    assert not BusinessService.objects.exists() and not Surface.objects.exists()
    assert not ControlPlaneAuditRecord.objects.exists()


def _generated(n):
    docs = [BS]
    for i in range(n):
        docs.append(doc("Process", f"proc-{i}", {"business_service_id": "bs-a"}))
        docs.append(doc("Surface", f"surf-{i}", {"process_id": f"proc-{i}"}))
        docs.append(doc("Agent", f"agent-{i}", {"type": "ai"}))
        docs.append(doc("Profile", f"prof-{i}", {"surface_id": f"surf-{i}"}))
        docs.append(doc("Grant", f"grant-{i}", {"agent_id": f"agent-{i}", "profile_id": f"prof-{i}"}))
    return bundle(*docs)


def test_query_count_does_not_grow_with_the_bundle(organization):
    counts = []
    for n in (5, 40):
        with CaptureQueriesContext(connection) as plan_queries:
            plan_bundle(organization, _generated(n))
        counts.append(len(plan_queries))
    assert counts[0] == counts[1]


@pytest.mark.postgres
def test_apply_query_count_does_not_grow_with_the_bundle():
    # (SQLite caps variables per statement, so its bulk inserts split into more batches.)
    applied = []
    for n, org_slug in ((5, "q1"), (40, "q2")):
        from governance.services.people import ensure_organization

        org = ensure_organization(org_slug, org_slug)
        with CaptureQueriesContext(connection) as apply_queries:
            apply_bundle(org, _generated(n), actor="t")
        applied.append(len(apply_queries))
    assert applied[0] == applied[1]


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_concurrent_applies_of_one_bundle_create_once(organization):
    body = bundle(BS, PROC, SURF, AGENT, PROF, GRANT)
    results, errors = [], []
    barrier = threading.Barrier(4)

    def run():
        try:
            barrier.wait()
            results.append(apply_bundle(organization, body, actor="t").results)
        except Exception as exc:  # collected and asserted
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=run) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    statuses = sorted(tuple(sorted({r["status"] for r in result})) for result in results)
    assert statuses == [("created",), ("unchanged",), ("unchanged",), ("unchanged",)]
    assert Surface.objects.count() == 1 and Grant.objects.count() == 1


def test_a_new_profile_declared_active_is_stored_in_review_as_midas_does(operator, organization):
    assert DEMO.count(b"lifecycle:\n    status: active") == 2  # both demo profiles say active

    response = post(operator, "/v1/controlplane/apply", DEMO)

    assert response.status_code == 200
    assert set(Profile.objects.values_list("version", "status")) == {(1, "review")}


def test_apply_bundle_command_loads_and_approves_the_demo(organization, make_person, capsys):
    from django.core.management import call_command

    make_person(roles=[Role.PLATFORM_ADMIN], username="boss")
    call_command(
        "apply_bundle",
        "controlplane/demo/bundle.yaml",
        "--organization",
        organization.slug,
        "--actor",
        "system:demo",
        "--approve-as",
        "boss",
    )
    out = capsys.readouterr().out
    assert "17 created" in out and "approved Surface surf-payment-release v1 as boss" in out
    assert set(Surface.objects.values_list("status", flat=True)) == {"active"}
    assert Surface.objects.get(key="surf-payment-release").approved_by == "boss"
    assert "approved Profile prof-payments-standard v1 as boss" in out
    assert set(Profile.objects.values_list("status", "submitted_by", "approved_by")) == {
        ("active", "system:demo", "boss")
    }
    call_command(
        "apply_bundle", "controlplane/demo/bundle.yaml", "--organization", organization.slug, "--approve-as", "boss"
    )
    assert "17 unchanged" in capsys.readouterr().out
