"""MIDAS's read-only introspection and structural endpoints, through HTTP."""

from datetime import datetime, timedelta
from decimal import Decimal

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from controlplane.models import BusinessServiceCapability
from governance.choices import Role
from governance.services.people import ensure_organization
from tests import factories

pytestmark = pytest.mark.django_db

SURFACE_FIELDS = {
    "id",
    "name",
    "status",
    "version",
    "effective_from",
    "approved_at",
    "approved_by",
    "successor_surface_id",
    "deprecation_reason",
    "domain",
    "business_owner",
    "technical_owner",
}
SURFACE_VERSION_FIELDS = {
    "version",
    "status",
    "effective_from",
    "approved_at",
    "approved_by",
    "created_at",
    "updated_at",
}
PROFILE_FIELDS = {
    "id",
    "version",
    "surface_id",
    "name",
    "description",
    "status",
    "effective_date",
    "confidence_threshold",
    "escalation_mode",
    "fail_mode",
    "policy_reference",
    "required_context_keys",
    "created_at",
    "updated_at",
    "approved_by",
    "approved_at",
    "consequence_threshold",
}
PROFILE_VERSION_FIELDS = {
    "id",
    "version",
    "surface_id",
    "name",
    "status",
    "effective_date",
    "confidence_threshold",
    "escalation_mode",
    "fail_mode",
    "created_at",
    "updated_at",
    "consequence_threshold",
}
AGENT_FIELDS = {
    "id",
    "name",
    "type",
    "owner",
    "model_version",
    "endpoint",
    "operational_state",
    "created_at",
    "updated_at",
}
GRANT_FIELDS = {
    "id",
    "agent_id",
    "profile_id",
    "status",
    "granted_by",
    "effective_from",
    "effective_until",
    "created_at",
    "updated_at",
}
CAPABILITY_FIELDS = {"id", "name", "description", "status", "owner", "created_at", "updated_at"}
PROCESS_FIELDS = {"id", "name", "business_service_id", "description", "status", "owner", "created_at", "updated_at"}
BUSINESS_SERVICE_FIELDS = {
    "id",
    "name",
    "description",
    "service_type",
    "regulatory_scope",
    "status",
    "created_at",
    "updated_at",
}
SURFACE_RECOVERY_FIELDS = {
    "surface_id",
    "latest_version",
    "latest_status",
    "active_version",
    "active_status",
    "successor_surface_id",
    "deprecation_reason",
    "version_count",
    "warnings",
    "recommended_next_actions",
}
PROFILE_RECOVERY_FIELDS = {
    "profile_id",
    "surface_id",
    "latest_version",
    "latest_status",
    "active_version",
    "active_status",
    "version_count",
    "versions",
    "active_grant_count",
    "capability_note",
    "warnings",
    "recommended_next_actions",
}

# Every endpoint, with the id in its path where it has one.
DETAIL_PATHS = [
    "/v1/surfaces/{id}",
    "/v1/surfaces/{id}/versions",
    "/v1/surfaces/{id}/recovery",
    "/v1/profiles/{id}",
    "/v1/profiles/{id}/versions",
    "/v1/profiles/{id}/recovery",
    "/v1/agents/{id}",
    "/v1/grants/{id}",
    "/v1/capabilities/{id}",
    "/v1/processes/{id}",
    "/v1/processes/{id}/surfaces",
    "/v1/businessservices/{id}",
]
NOT_FOUND_MESSAGES = {
    "/v1/surfaces/{id}": "surface not found",
    "/v1/surfaces/{id}/versions": "surface not found",
    "/v1/surfaces/{id}/recovery": "surface not found",
    "/v1/profiles/{id}": "profile not found",
    "/v1/profiles/{id}/versions": "profile not found",
    "/v1/profiles/{id}/recovery": "profile not found",
    "/v1/agents/{id}": "agent not found",
    "/v1/grants/{id}": "grant not found",
    "/v1/capabilities/{id}": "capability not found",
    "/v1/processes/{id}": "process not found",
    "/v1/processes/{id}/surfaces": "process not found",
    "/v1/businessservices/{id}": "business service not found",
}
LIST_PATHS = [
    "/v1/profiles?surface_id=surf-loan-approval",
    "/v1/grants?agent_id=agent-loans",
    "/v1/capabilities",
    "/v1/processes",
    "/v1/businessservices",
]
ALL_PATHS = [path.format(id="x") for path in DETAIL_PATHS] + LIST_PATHS


@pytest.fixture
def viewer(client_with):
    return client_with(Role.PLATFORM_VIEWER)


@pytest.fixture
def other_organization(db):
    return ensure_organization("globex", "Globex")


def is_rfc3339(value) -> bool:
    return isinstance(value, str) and datetime.fromisoformat(value.replace("Z", "+00:00")).tzinfo is not None


# --- authentication and roles ---------------------------------------------------------------


@pytest.mark.parametrize("path", ALL_PATHS)
def test_introspection_without_credentials_is_401(api_client, path):
    response = api_client.get(path)
    assert response.status_code == 401
    assert response.json() == {"error": "unauthenticated"}


@pytest.mark.parametrize("path", ALL_PATHS)
def test_introspection_without_a_platform_role_is_403_naming_the_permission(client_with, path):
    response = client_with(Role.GOVERNANCE_APPROVER).get(path)
    assert response.status_code == 403
    assert response.json() == {"error": "forbidden", "required_permission": "controlplane:read"}


@pytest.mark.parametrize("role", [Role.PLATFORM_VIEWER, Role.PLATFORM_OPERATOR, Role.PLATFORM_ADMIN])
def test_viewer_operator_and_admin_may_read(client_with, organization, role):
    factories.surface(organization)
    response = client_with(role).get("/v1/surfaces/surf-loan-approval")
    assert response.status_code == 200


# --- 400 and 404 for every path id ----------------------------------------------------------


@pytest.mark.parametrize("path", DETAIL_PATHS)
def test_unknown_id_is_404_naming_the_resource(viewer, path):
    response = viewer.get(path.format(id="does-not-exist"))
    assert response.status_code == 404
    assert response.json() == {"error": NOT_FOUND_MESSAGES[path]}


@pytest.mark.parametrize("path", DETAIL_PATHS)
@pytest.mark.parametrize("bad_id", ["Upper-Case", "has%20space", "semi;colon", "a" * 256, "tab%09", "nl%0A"])
def test_id_that_is_not_an_identifier_is_400(viewer, path, bad_id):
    response = viewer.get(path.format(id=bad_id))
    assert response.status_code == 400
    assert response.json()["error"].startswith("invalid ") and response.json()["error"].endswith(" id")


def test_longest_valid_identifier_is_looked_up_not_rejected(viewer):
    assert viewer.get("/v1/agents/" + "a" * 255).status_code == 404


@pytest.mark.parametrize("path", DETAIL_PATHS)
def test_another_organizations_resources_are_invisible(viewer, other_organization, path):
    service = factories.business_service(other_organization, key="shared")
    factories.capability(other_organization, key="shared")
    process = factories.process(other_organization, key="shared", service=service)
    factories.surface(other_organization, key="shared", process_=process)
    factories.profile(other_organization, key="shared", surface_key="shared")
    agent = factories.agent(other_organization, key="shared")
    factories.grant(other_organization, key="shared", agent_=agent, profile_key="shared")

    response = viewer.get(path.format(id="shared"))
    assert response.status_code == 404


def test_lists_show_only_the_callers_organization(viewer, organization, other_organization):
    factories.business_service(organization, key="bs-mine")
    factories.business_service(other_organization, key="bs-theirs")
    factories.capability(other_organization, key="cap-theirs")
    assert [row["id"] for row in viewer.get("/v1/businessservices").json()] == ["bs-mine"]
    assert viewer.get("/v1/capabilities").json() == []


# --- surfaces -------------------------------------------------------------------------------


def test_surface_is_its_latest_version_with_the_reference_fields(viewer, organization):
    approved_at = timezone.now() - timedelta(hours=2)
    factories.surface(organization, version=1, status="active", approved_by="alice", approved_at=approved_at)
    factories.surface(
        organization, version=2, status="review", domain="lending", business_owner="bob", technical_owner="carol"
    )

    response = viewer.get("/v1/surfaces/surf-loan-approval")

    assert response.status_code == 200
    body = response.json()
    assert set(body) == SURFACE_FIELDS
    assert body["id"] == "surf-loan-approval"
    assert body["version"] == 2
    assert body["status"] == "review"
    assert (body["domain"], body["business_owner"], body["technical_owner"]) == ("lending", "bob", "carol")
    assert body["approved_at"] is None
    assert body["approved_by"] == ""
    assert body["successor_surface_id"] == "" and body["deprecation_reason"] == ""
    assert is_rfc3339(body["effective_from"])


def test_surface_with_no_effective_from_answers_null(viewer, organization):
    factories.surface(organization, status="draft", effective_from=None)
    assert viewer.get("/v1/surfaces/surf-loan-approval").json()["effective_from"] is None


def test_surface_versions_are_listed_latest_first(viewer, organization):
    factories.surface(organization, version=1, status="deprecated", approved_by="alice", approved_at=timezone.now())
    factories.surface(organization, version=2, status="active")
    factories.surface(organization, version=3, status="review")

    response = viewer.get("/v1/surfaces/surf-loan-approval/versions")

    assert response.status_code == 200
    versions = response.json()
    assert [v["version"] for v in versions] == [3, 2, 1]
    assert all(set(v) == SURFACE_VERSION_FIELDS for v in versions)
    assert versions[2]["approved_by"] == "alice" and is_rfc3339(versions[2]["approved_at"])
    assert is_rfc3339(versions[0]["created_at"]) and is_rfc3339(versions[0]["updated_at"])


def test_surface_recovery_reports_active_and_latest(viewer, organization):
    factories.surface(organization, version=1, status="active")
    factories.surface(organization, version=2, status="review")

    response = viewer.get("/v1/surfaces/surf-loan-approval/recovery")

    assert response.status_code == 200
    assert response.json() == {
        "surface_id": "surf-loan-approval",
        "latest_version": 2,
        "latest_status": "review",
        "active_version": 1,
        "active_status": "active",
        "successor_surface_id": "",
        "deprecation_reason": "",
        "version_count": 2,
        "warnings": ["latest version 2 is in review; evaluation uses version 1"],
        "recommended_next_actions": ["approve latest review version to activate updated configuration"],
    }


def test_surface_recovery_with_nothing_active_has_null_active_fields(viewer, organization):
    factories.surface(organization, version=1, status="review")

    body = viewer.get("/v1/surfaces/surf-loan-approval/recovery").json()

    assert set(body) == SURFACE_RECOVERY_FIELDS
    assert body["active_version"] is None and body["active_status"] is None
    assert body["recommended_next_actions"] == ["approve latest review version to enable evaluation"]


def test_surface_recovery_names_the_successor_of_a_deprecated_surface(viewer, organization):
    factories.surface(
        organization, status="deprecated", deprecation_reason="replaced", successor_surface_id="surf-loan-v2"
    )

    body = viewer.get("/v1/surfaces/surf-loan-approval/recovery").json()

    assert body["successor_surface_id"] == "surf-loan-v2"
    assert body["deprecation_reason"] == "replaced"
    assert body["recommended_next_actions"] == ["inspect successor surface 'surf-loan-v2' and plan grant migration"]


def test_surface_recovery_changes_nothing(viewer, organization):
    surface = factories.surface(organization, version=1, status="review")
    viewer.get("/v1/surfaces/surf-loan-approval/recovery")
    refreshed = type(surface).objects.get(pk=surface.pk)
    assert (refreshed.status, refreshed.updated_at) == (surface.status, surface.updated_at)


# --- profiles -------------------------------------------------------------------------------


def test_profile_is_its_latest_version_with_the_reference_fields(viewer, organization):
    factories.profile(organization, version=1, status="active")
    factories.profile(
        organization,
        version=2,
        status="review",
        description="standard loans",
        policy_reference="loans.standard",
        required_context_keys=["amount", "customer_id"],
        escalation_mode="manual",
        consequence_type="monetary",
        consequence_amount=Decimal("5000.00"),
        consequence_currency="EUR",
    )

    response = viewer.get("/v1/profiles/prof-loans-standard")

    assert response.status_code == 200
    body = response.json()
    assert set(body) == PROFILE_FIELDS
    assert body["id"] == "prof-loans-standard"
    assert body["version"] == 2
    assert body["surface_id"] == "surf-loan-approval"
    assert body["confidence_threshold"] == 0.8
    assert body["fail_mode"] == "closed" and body["escalation_mode"] == "manual"
    assert body["required_context_keys"] == ["amount", "customer_id"]
    assert body["policy_reference"] == "loans.standard"
    assert body["consequence_threshold"] == {"type": "monetary", "amount": 5000.0, "currency": "EUR"}
    assert is_rfc3339(body["effective_date"])
    assert body["approved_at"] is None


def test_profile_risk_rating_threshold_and_no_threshold(viewer, organization):
    factories.profile(organization, key="prof-rated", consequence_type="risk_rating", consequence_risk_rating="high")
    factories.profile(organization, key="prof-plain")
    assert viewer.get("/v1/profiles/prof-rated").json()["consequence_threshold"] == {
        "type": "risk_rating",
        "risk_rating": "high",
    }
    assert viewer.get("/v1/profiles/prof-plain").json()["consequence_threshold"] is None


def test_profiles_of_a_surface_are_the_latest_version_of_each(viewer, organization):
    factories.profile(organization, key="prof-a", version=1, status="active")
    factories.profile(organization, key="prof-a", version=2, status="review")
    factories.profile(organization, key="prof-b", version=1, status="active")
    factories.profile(organization, key="prof-elsewhere", surface_key="surf-other")

    response = viewer.get("/v1/profiles?surface_id=surf-loan-approval")

    assert response.status_code == 200
    body = response.json()
    assert [(p["id"], p["version"]) for p in body] == [("prof-a", 2), ("prof-b", 1)]
    assert all(set(p) == PROFILE_FIELDS for p in body)


def test_profiles_of_a_surface_filter_by_status(viewer, organization):
    factories.profile(organization, key="prof-a", status="active")
    factories.profile(organization, key="prof-b", status="review")
    body = viewer.get("/v1/profiles?surface_id=surf-loan-approval&status=review").json()
    assert [p["id"] for p in body] == ["prof-b"]


def test_profiles_of_an_unknown_surface_is_an_empty_array(viewer):
    response = viewer.get("/v1/profiles?surface_id=surf-nobody")
    assert response.status_code == 200
    assert response.json() == []


def test_profiles_without_surface_id_is_400(viewer):
    for path in ("/v1/profiles", "/v1/profiles?surface_id=", "/v1/profiles?status=active"):
        response = viewer.get(path)
        assert response.status_code == 400
        assert response.json() == {"error": "surface_id query parameter is required"}


@pytest.mark.parametrize("bad", ["Surf", "a%20b", "a" * 256, "x%0A"])
def test_profiles_with_an_invalid_surface_id_is_400(viewer, bad):
    response = viewer.get(f"/v1/profiles?surface_id={bad}")
    assert response.status_code == 400
    assert response.json() == {"error": "invalid surface_id"}


def test_profiles_with_an_unknown_status_filter_is_400(viewer):
    response = viewer.get("/v1/profiles?surface_id=surf-loan-approval&status=bogus")
    assert response.status_code == 400
    assert response.json()["error"].startswith("status:")


def test_profile_versions_are_listed_latest_first_with_the_reference_fields(viewer, organization):
    for version, status in ((1, "deprecated"), (2, "active"), (3, "review")):
        factories.profile(organization, version=version, status=status)

    response = viewer.get("/v1/profiles/prof-loans-standard/versions")

    assert response.status_code == 200
    versions = response.json()
    assert [v["version"] for v in versions] == [3, 2, 1]
    assert [v["status"] for v in versions] == ["review", "active", "deprecated"]
    assert all(set(v) == PROFILE_VERSION_FIELDS for v in versions)


def test_profile_recovery_counts_active_grants_of_this_organization_only(viewer, organization, other_organization):
    factories.profile(organization, version=1, status="active")
    agent = factories.agent(organization)
    factories.grant(organization, key="g-active-1", agent_=agent)
    factories.grant(organization, key="g-active-2", agent_=agent)
    factories.grant(organization, key="g-suspended", agent_=agent, status="suspended")
    factories.grant(organization, key="g-other-profile", agent_=agent, profile_key="prof-other")
    factories.grant(other_organization, key="g-other-org", agent_=factories.agent(other_organization))

    response = viewer.get("/v1/profiles/prof-loans-standard/recovery")

    assert response.status_code == 200
    body = response.json()
    assert set(body) == PROFILE_RECOVERY_FIELDS
    assert body["active_grant_count"] == 2
    assert body["profile_id"] == "prof-loans-standard"
    assert body["surface_id"] == "surf-loan-approval"
    assert (body["latest_version"], body["active_version"], body["active_status"]) == (1, 1, "active")
    assert body["recommended_next_actions"] == ["inspect dependent grants before deprecating this profile version"]
    assert body["capability_note"] == (
        "profiles follow a governed review→active→deprecated lifecycle; "
        "apply creates a review version, explicit approval is required before runtime use"
    )


def test_profile_recovery_lists_versions_with_their_effective_from(viewer, organization):
    future = timezone.now() + timedelta(days=3)
    factories.profile(organization, version=1, status="active", effective_date=future)

    body = viewer.get("/v1/profiles/prof-loans-standard/recovery").json()

    assert body["active_version"] is None and body["active_status"] is None
    assert body["versions"] == [
        {"version": 1, "status": "active", "effective_from": future.isoformat().replace("+00:00", "Z")}
    ]
    assert body["recommended_next_actions"] == [
        "re-apply profile with an effective_date in the past to restore evaluation eligibility"
    ]


# --- agents and grants ----------------------------------------------------------------------


def test_agent_has_the_reference_fields(viewer, organization):
    factories.agent(organization, type="service", owner="team-loans", model_version="v7", endpoint="https://a.example")

    response = viewer.get("/v1/agents/agent-loans")

    assert response.status_code == 200
    body = response.json()
    assert set(body) == AGENT_FIELDS
    assert (body["id"], body["type"], body["owner"], body["operational_state"]) == (
        "agent-loans",
        "service",
        "team-loans",
        "active",
    )
    assert (body["model_version"], body["endpoint"]) == ("v7", "https://a.example")


def test_grant_has_the_reference_fields_with_logical_ids(viewer, organization):
    until = timezone.now() + timedelta(days=30)
    factories.grant(organization, granted_by="alice", effective_from=timezone.now(), effective_until=until)

    response = viewer.get("/v1/grants/grant-loans")

    assert response.status_code == 200
    body = response.json()
    assert set(body) == GRANT_FIELDS
    assert (body["id"], body["agent_id"], body["profile_id"]) == ("grant-loans", "agent-loans", "prof-loans-standard")
    assert body["status"] == "active" and body["granted_by"] == "alice"
    assert is_rfc3339(body["effective_from"]) and is_rfc3339(body["effective_until"])


def test_grant_without_window_answers_null_timestamps(viewer, organization):
    factories.grant(organization)
    body = viewer.get("/v1/grants/grant-loans").json()
    assert body["effective_from"] is None and body["effective_until"] is None


def test_grants_of_an_agent(viewer, organization):
    loans, cards = factories.agent(organization, key="agent-loans"), factories.agent(organization, key="agent-cards")
    factories.grant(organization, key="g1", agent_=loans)
    factories.grant(organization, key="g2", agent_=loans, profile_key="prof-other", status="revoked")
    factories.grant(organization, key="g3", agent_=cards)

    response = viewer.get("/v1/grants?agent_id=agent-loans")

    assert response.status_code == 200
    assert [(g["id"], g["agent_id"]) for g in response.json()] == [("g1", "agent-loans"), ("g2", "agent-loans")]
    assert all(set(g) == GRANT_FIELDS for g in response.json())
    assert [g["id"] for g in viewer.get("/v1/grants?agent_id=agent-loans&status=revoked").json()] == ["g2"]


def test_grants_of_a_profile(viewer, organization):
    loans, cards = factories.agent(organization, key="agent-loans"), factories.agent(organization, key="agent-cards")
    factories.grant(organization, key="g1", agent_=loans)
    factories.grant(organization, key="g2", agent_=cards)
    factories.grant(organization, key="g3", agent_=cards, profile_key="prof-other")

    body = viewer.get("/v1/grants?profile_id=prof-loans-standard").json()

    assert [(g["id"], g["profile_id"]) for g in body] == [("g1", "prof-loans-standard"), ("g2", "prof-loans-standard")]


def test_grants_of_an_unknown_agent_is_an_empty_array(viewer):
    response = viewer.get("/v1/grants?agent_id=agent-nobody")
    assert response.status_code == 200
    assert response.json() == []


@pytest.mark.parametrize("query", ["", "?status=active", "?agent_id=", "?profile_id="])
def test_grants_without_agent_id_or_profile_id_is_400(viewer, query):
    response = viewer.get(f"/v1/grants{query}")
    assert response.status_code == 400
    assert response.json() == {"error": "agent_id or profile_id query parameter is required"}


def test_grants_with_both_agent_id_and_profile_id_is_400(viewer):
    response = viewer.get("/v1/grants?agent_id=agent-loans&profile_id=prof-loans-standard")
    assert response.status_code == 400
    assert response.json() == {"error": "only one of agent_id or profile_id may be specified"}


@pytest.mark.parametrize("name", ["agent_id", "profile_id"])
def test_grants_with_an_invalid_id_is_400(viewer, name):
    response = viewer.get(f"/v1/grants?{name}=Not%20An%20Id")
    assert response.status_code == 400
    assert response.json() == {"error": f"invalid {name}"}


def test_grants_with_an_unknown_status_filter_is_400(viewer):
    response = viewer.get("/v1/grants?agent_id=agent-loans&status=paused")
    assert response.status_code == 400


# --- structure ------------------------------------------------------------------------------


def test_capabilities_list_and_detail_have_the_reference_fields(viewer, organization):
    factories.capability(organization, key="cap-lending", description="lend money", owner="ops")
    factories.capability(organization, key="cap-cards", status="deprecated")

    listed = viewer.get("/v1/capabilities").json()
    detail = viewer.get("/v1/capabilities/cap-lending").json()

    assert [c["id"] for c in listed] == ["cap-cards", "cap-lending"]
    assert all(set(c) == CAPABILITY_FIELDS for c in listed)
    assert set(detail) == CAPABILITY_FIELDS
    assert (detail["description"], detail["owner"], detail["status"]) == ("lend money", "ops", "active")


def test_capabilities_filter_by_status_owner_and_business_service(viewer, organization):
    lending = factories.business_service(organization, key="bs-lending")
    cards = factories.business_service(organization, key="bs-cards")
    loans_cap = factories.capability(organization, key="cap-loans", owner="ops")
    factories.capability(organization, key="cap-old", status="deprecated", owner="ops")
    both = factories.capability(organization, key="cap-kyc")
    for index, (service, capability) in enumerate([(lending, loans_cap), (lending, both), (cards, both)]):
        BusinessServiceCapability.objects.create(
            organization=organization, key=f"link-{index}", business_service=service, capability=capability
        )

    def ids(query):
        response = viewer.get(f"/v1/capabilities?{query}")
        assert response.status_code == 200
        return [c["id"] for c in response.json()]

    assert ids("status=deprecated") == ["cap-old"]
    assert ids("owner=ops") == ["cap-loans", "cap-old"]
    assert ids("business_service_id=bs-lending") == ["cap-kyc", "cap-loans"]
    assert ids("business_service_id=bs-cards") == ["cap-kyc"]


@pytest.mark.parametrize(
    "path",
    [
        "/v1/capabilities?status=bogus",
        "/v1/capabilities?business_service_id=Not%20An%20Id",
        "/v1/processes?status=bogus",
        "/v1/processes?business_service_id=BAD",
        "/v1/businessservices?status=inactive",
        "/v1/businessservices?service_type=bogus",
        "/v1/processes/proc-loans/surfaces?status=bogus",
        "/v1/capabilities?owner=%00",
        "/v1/processes?owner=a%00b",
    ],
)
def test_list_filters_with_values_they_cannot_take_are_400(viewer, organization, path):
    factories.process(organization, key="proc-loans")
    response = viewer.get(path)
    assert response.status_code == 400
    assert set(response.json()) == {"error"}


def test_processes_list_and_detail_have_the_reference_fields(viewer, organization):
    lending = factories.business_service(organization, key="bs-lending")
    cards = factories.business_service(organization, key="bs-cards")
    factories.process(organization, key="proc-loans", service=lending, owner="ops", description="origination")
    factories.process(organization, key="proc-cards", service=cards, status="inactive")

    listed = viewer.get("/v1/processes").json()
    detail = viewer.get("/v1/processes/proc-loans").json()

    assert [(p["id"], p["business_service_id"]) for p in listed] == [
        ("proc-cards", "bs-cards"),
        ("proc-loans", "bs-lending"),
    ]
    assert all(set(p) == PROCESS_FIELDS for p in listed)
    assert set(detail) == PROCESS_FIELDS
    assert (detail["business_service_id"], detail["owner"], detail["description"]) == (
        "bs-lending",
        "ops",
        "origination",
    )
    assert [p["id"] for p in viewer.get("/v1/processes?business_service_id=bs-lending").json()] == ["proc-loans"]
    assert [p["id"] for p in viewer.get("/v1/processes?status=inactive").json()] == ["proc-cards"]
    assert [p["id"] for p in viewer.get("/v1/processes?owner=ops").json()] == ["proc-loans"]


def test_process_surfaces_are_the_latest_version_of_each_surface_in_the_process(viewer, organization):
    loans = factories.process(organization, key="proc-loans")
    cards = factories.process(organization, key="proc-cards")
    factories.surface(organization, key="surf-a", version=1, status="active", process_=loans)
    factories.surface(organization, key="surf-a", version=2, status="review", process_=loans)
    factories.surface(organization, key="surf-b", version=1, status="active", process_=loans)
    factories.surface(organization, key="surf-c", version=1, status="active", process_=cards)
    # surf-moved's latest version belongs to proc-cards: it is no longer one of proc-loans' surfaces.
    factories.surface(organization, key="surf-moved", version=1, status="active", process_=loans)
    factories.surface(organization, key="surf-moved", version=2, status="review", process_=cards)

    response = viewer.get("/v1/processes/proc-loans/surfaces")

    assert response.status_code == 200
    body = response.json()
    assert [(s["id"], s["version"]) for s in body] == [("surf-a", 2), ("surf-b", 1)]
    assert all(set(s) == SURFACE_FIELDS for s in body)
    assert [s["id"] for s in viewer.get("/v1/processes/proc-loans/surfaces?status=active").json()] == ["surf-b"]


def test_process_with_no_surfaces_answers_an_empty_array(viewer, organization):
    factories.process(organization, key="proc-empty")
    response = viewer.get("/v1/processes/proc-empty/surfaces")
    assert response.status_code == 200
    assert response.json() == []


def test_business_services_list_and_detail_have_the_reference_fields(viewer, organization):
    factories.business_service(
        organization, key="bs-lending", service_type="customer_facing", regulatory_scope="CCD2", owner_id="ops"
    )
    factories.business_service(organization, key="bs-ledger", service_type="technical", status="deprecated")

    listed = viewer.get("/v1/businessservices").json()
    detail = viewer.get("/v1/businessservices/bs-lending").json()

    assert [b["id"] for b in listed] == ["bs-ledger", "bs-lending"]
    assert all(set(b) == BUSINESS_SERVICE_FIELDS for b in listed)
    assert set(detail) == BUSINESS_SERVICE_FIELDS
    assert (detail["service_type"], detail["regulatory_scope"], detail["status"]) == (
        "customer_facing",
        "CCD2",
        "active",
    )
    assert [b["id"] for b in viewer.get("/v1/businessservices?status=deprecated").json()] == ["bs-ledger"]
    assert [b["id"] for b in viewer.get("/v1/businessservices?owner=ops").json()] == ["bs-lending"]
    assert [b["id"] for b in viewer.get("/v1/businessservices?service_type=technical").json()] == ["bs-ledger"]


# --- query counts: lists stay constant as rows grow -----------------------------------------


@pytest.fixture
def seed(organization):
    """``seed(start, count)`` adds ``count`` more of everything the lists show, attached to
    one business service, process, surface and agent."""
    service = factories.business_service(organization, key="bs-lending")
    process = factories.process(organization, key="proc-loans", service=service)
    agent = factories.agent(organization)

    def add(start: int, count: int) -> None:
        for n in range(start, start + count):
            capability = factories.capability(organization, key=f"cap-{n}")
            BusinessServiceCapability.objects.create(
                organization=organization, key=f"link-{n}", business_service=service, capability=capability
            )
            factories.business_service(organization, key=f"bs-{n}")
            factories.process(organization, key=f"proc-{n}", service=service)
            factories.surface(organization, key=f"surf-{n}", version=1, status="active", process_=process)
            factories.surface(organization, key=f"surf-{n}", version=2, status="review", process_=process)
            factories.profile(organization, key=f"prof-{n}", version=1, status="active")
            factories.profile(organization, key=f"prof-{n}", version=2, status="review")
            factories.grant(organization, key=f"grant-{n}", agent_=agent, profile_key=f"prof-{n}")
            factories.grant(organization, key=f"grant-shared-{n}", agent_=agent, profile_key="prof-shared")

    return add


LIST_QUERY_PATHS = [
    "/v1/profiles?surface_id=surf-loan-approval",
    "/v1/grants?agent_id=agent-loans",
    "/v1/grants?profile_id=prof-shared",
    "/v1/capabilities",
    "/v1/capabilities?business_service_id=bs-lending",
    "/v1/processes",
    "/v1/processes?business_service_id=bs-lending",
    "/v1/processes/proc-loans/surfaces",
    "/v1/businessservices",
]


def queries_for(client, path) -> tuple[int, int]:
    with CaptureQueriesContext(connection) as captured:
        response = client.get(path)
    assert response.status_code == 200, response.content
    return len(captured), len(response.json())


@pytest.mark.parametrize("path", LIST_QUERY_PATHS)
def test_list_query_count_does_not_grow_with_rows(viewer, seed, path, django_assert_max_num_queries):
    seed(0, 2)
    few_queries, few_rows = queries_for(viewer, path)
    seed(2, 10)
    many_queries, many_rows = queries_for(viewer, path)

    assert many_rows > few_rows
    assert many_queries == few_queries
    # Token, organization, the list (and, for a process's surfaces, the process).
    with django_assert_max_num_queries(4):
        viewer.get(path)


@pytest.mark.parametrize(
    "path",
    [
        "/v1/surfaces/surf-1/recovery",
        "/v1/profiles/prof-1/recovery",
        "/v1/surfaces/surf-1/versions",
        "/v1/profiles/prof-1/versions",
    ],
)
def test_version_reads_query_count_does_not_grow_with_versions(
    viewer, organization, seed, path, django_assert_max_num_queries
):
    seed(0, 2)
    few_queries, _ = queries_for(viewer, path)
    for version in range(3, 13):
        factories.surface(organization, key="surf-1", version=version, status="deprecated")
        factories.profile(organization, key="prof-1", version=version, status="deprecated")
    many_queries, _ = queries_for(viewer, path)
    assert many_queries == few_queries
    # Token, organization, versions, effective versions (profiles: + the active-grant count).
    with django_assert_max_num_queries(5):
        viewer.get(path)
