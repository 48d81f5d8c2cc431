"""Lifecycle endpoints: surfaces and profiles review → active → deprecated, grant transitions,
maker-checker, who may approve, and the audit record each change writes."""

import threading
import time
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone
from rest_framework.test import APIClient

from controlplane.choices import GRANT_TRANSITIONS, GrantStatus
from controlplane.models import Grant, Profile, Surface
from controlplane.services import lifecycle
from controlplane.services.lifecycle import Principal
from evidence.models import ControlPlaneAuditRecord
from governance.choices import Role
from governance.errors import Conflict
from governance.services.people import ensure_organization
from governance.services.tokens import issue_token
from tests import factories

pytestmark = pytest.mark.django_db

SURFACE = "surf-payment-release"


def client_for(person, *roles) -> APIClient:
    _, secret = issue_token(person, "test", roles)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
    return client


@pytest.fixture
def admin(make_person):
    return make_person(roles=[Role.PLATFORM_ADMIN], username="gov-lead", email="Gov.Lead@example.com")


@pytest.fixture
def admin_api(admin):
    return client_for(admin, Role.PLATFORM_ADMIN)


@pytest.fixture
def review_surface(organization):
    return factories.surface(
        organization, key=SURFACE, status="review", effective_from=None, business_owner="owner-b", technical_owner=""
    )


def approve_body(**overrides):
    body = {"submitted_by": "user-team-lead", "approver_id": "user-governance-lead", "approver_name": "Governance Lead"}
    body.update(overrides)
    return {k: v for k, v in body.items() if v is not None}


def audit_records(**filters):
    return list(ControlPlaneAuditRecord.objects.filter(**filters))


# --- POST /v1/controlplane/surfaces/{id}/approve ------------------------------------------


def test_approving_a_review_surface_makes_it_active_and_records_the_authenticated_approver(
    admin_api, review_surface, organization
):
    response = admin_api.post(f"/v1/controlplane/surfaces/{SURFACE}/approve", approve_body(), format="json")

    assert response.status_code == 200
    assert response.json() == {"surface_id": SURFACE, "status": "active", "approved_by": "gov-lead"}
    review_surface.refresh_from_db()
    assert review_surface.status == "active"
    assert review_surface.approved_by == "gov-lead"  # the principal, not the body's approver_id
    assert review_surface.approved_at is not None
    assert review_surface.effective_from == review_surface.approved_at  # unset → now
    [record] = audit_records(resource_id=SURFACE)
    assert (record.resource_kind, record.action, record.actor, record.resource_version) == (
        "Surface",
        "approve",
        "gov-lead",
        1,
    )
    assert record.organization_id == organization.pk


def test_approving_keeps_an_effective_from_that_was_already_set(admin_api, organization):
    start = timezone.now() + timedelta(days=3)
    factories.surface(organization, key=SURFACE, status="review", effective_from=start)

    response = admin_api.post(f"/v1/controlplane/surfaces/{SURFACE}/approve", approve_body(), format="json")

    assert response.status_code == 200
    assert Surface.objects.get(key=SURFACE).effective_from == start


@pytest.mark.parametrize("missing", ["approver_id", "submitted_by"])
def test_approving_without_an_identity_field_is_400(admin_api, review_surface, missing):
    response = admin_api.post(
        f"/v1/controlplane/surfaces/{SURFACE}/approve", approve_body(**{missing: None}), format="json"
    )

    assert response.status_code == 400
    assert missing in response.json()["error"]
    assert "detail" not in response.json()


def test_approving_with_malformed_json_is_400(admin_api, review_surface):
    response = admin_api.post(
        f"/v1/controlplane/surfaces/{SURFACE}/approve", "{not json", content_type="application/json"
    )

    assert response.status_code == 400
    assert "error" in response.json()


def test_approving_an_unknown_surface_is_404(admin_api):
    response = admin_api.post("/v1/controlplane/surfaces/surf-nope/approve", approve_body(), format="json")

    assert response.status_code == 404
    assert "surf-nope" in response.json()["error"]


def test_approving_a_surface_of_another_organization_is_404(admin_api):
    other = ensure_organization("globex", "Globex")
    factories.surface(other, key=SURFACE, status="review")

    response = admin_api.post(f"/v1/controlplane/surfaces/{SURFACE}/approve", approve_body(), format="json")

    assert response.status_code == 404
    assert Surface.objects.get(organization=other).status == "review"


def test_approving_a_surface_not_in_review_is_409(admin_api, organization):
    factories.surface(organization, key=SURFACE, status="active")

    response = admin_api.post(f"/v1/controlplane/surfaces/{SURFACE}/approve", approve_body(), format="json")

    assert response.status_code == 409
    assert "review" in response.json()["error"]
    assert audit_records() == []


def test_approving_targets_the_latest_version_only(admin_api, organization):
    factories.surface(organization, key=SURFACE, version=1, status="review")
    factories.surface(organization, key=SURFACE, version=2, status="active")

    response = admin_api.post(f"/v1/controlplane/surfaces/{SURFACE}/approve", approve_body(), format="json")

    assert response.status_code == 409
    assert Surface.objects.get(key=SURFACE, version=1).status == "review"


def test_approving_a_new_version_leaves_the_previous_active_version_active(admin_api, organization):
    factories.surface(organization, key=SURFACE, version=1, status="active")
    factories.surface(organization, key=SURFACE, version=2, status="review")

    response = admin_api.post(f"/v1/controlplane/surfaces/{SURFACE}/approve", approve_body(), format="json")

    assert response.status_code == 200
    statuses = dict(Surface.objects.filter(key=SURFACE).values_list("version", "status"))
    assert statuses == {1: "active", 2: "active"}
    assert audit_records()[0].resource_version == 2


def test_the_submitter_named_in_the_body_cannot_approve_their_own_surface(admin_api, review_surface):
    response = admin_api.post(
        f"/v1/controlplane/surfaces/{SURFACE}/approve", approve_body(submitted_by="gov-lead"), format="json"
    )

    assert response.status_code == 409
    assert response.json() == {"error": "maker-checker: the submitter cannot approve their own surface"}
    review_surface.refresh_from_db()
    assert review_surface.status == "review"
    assert audit_records() == []


def test_the_stored_submitter_cannot_approve_even_when_the_body_names_someone_else(admin_api, organization):
    factories.surface(organization, key=SURFACE, status="review", submitted_by="gov.lead@EXAMPLE.com")

    response = admin_api.post(
        f"/v1/controlplane/surfaces/{SURFACE}/approve", approve_body(submitted_by="someone-else"), format="json"
    )

    assert response.status_code == 409
    assert "maker-checker" in response.json()["error"]


def test_a_governance_approver_who_owns_the_surface_may_approve_it(make_person, organization):
    approver = make_person(roles=[Role.GOVERNANCE_APPROVER], username="owner-t", email="owner-t@example.com")
    factories.surface(
        organization, key=SURFACE, status="review", business_owner="x", technical_owner="Owner-T@example.com"
    )

    response = client_for(approver, Role.GOVERNANCE_APPROVER).post(
        f"/v1/controlplane/surfaces/{SURFACE}/approve", approve_body(), format="json"
    )

    assert response.status_code == 200
    assert response.json()["approved_by"] == "owner-t"


def test_a_governance_approver_named_owner_by_uuid_may_approve(make_person, organization):
    approver = make_person(roles=[Role.GOVERNANCE_APPROVER], username="owner-u")
    factories.surface(organization, key=SURFACE, status="review", business_owner=str(approver.pk))

    response = client_for(approver, Role.GOVERNANCE_APPROVER).post(
        f"/v1/controlplane/surfaces/{SURFACE}/approve", approve_body(), format="json"
    )

    assert response.status_code == 200


def test_a_governance_approver_who_does_not_own_the_surface_is_403(client_with, review_surface):
    response = client_with(Role.GOVERNANCE_APPROVER).post(
        f"/v1/controlplane/surfaces/{SURFACE}/approve", approve_body(), format="json"
    )

    assert response.status_code == 403
    assert response.json() == {"error": "forbidden", "required_permission": "controlplane:approve"}
    review_surface.refresh_from_db()
    assert review_surface.status == "review"


@pytest.mark.parametrize("role", [Role.PLATFORM_VIEWER, Role.PLATFORM_OPERATOR, Role.GOVERNANCE_REVIEWER])
def test_approving_without_an_approver_role_is_403(client_with, review_surface, role):
    response = client_with(role).post(f"/v1/controlplane/surfaces/{SURFACE}/approve", approve_body(), format="json")

    assert response.status_code == 403
    assert response.json() == {"error": "forbidden", "required_permission": "controlplane:approve"}


def test_approving_unauthenticated_is_401(api_client, review_surface):
    response = api_client.post(f"/v1/controlplane/surfaces/{SURFACE}/approve", approve_body(), format="json")

    assert response.status_code == 401
    assert response.json() == {"error": "unauthenticated"}


def test_in_open_mode_the_body_approver_is_recorded_and_checked_against_the_submitter(settings, api_client):
    settings.MANDATE_AUTH_MODE = "open"
    organization = ensure_organization(settings.MANDATE_DEFAULT_ORGANIZATION, "Demo")
    factories.surface(organization, key=SURFACE, status="review")
    url = f"/v1/controlplane/surfaces/{SURFACE}/approve"

    same = api_client.post(url, approve_body(submitted_by="alice", approver_id="alice"), format="json")
    approved = api_client.post(url, approve_body(submitted_by="alice", approver_id="bob"), format="json")

    assert same.status_code == 409
    assert approved.status_code == 200
    assert approved.json()["approved_by"] == "bob"
    assert audit_records()[0].actor == "bob"


# --- POST /v1/controlplane/surfaces/{id}/deprecate ----------------------------------------


def deprecate_body(**overrides):
    body = {
        "deprecated_by": "user-governance-lead",
        "reason": "Superseded by surf-payment-release-v2",
        "successor_id": "surf-payment-release-v2",
    }
    body.update(overrides)
    return {k: v for k, v in body.items() if v is not None}


def test_deprecating_an_active_surface_answers_as_midas_does(admin_api, organization):
    factories.surface(organization, key=SURFACE, status="active")
    factories.surface(organization, key="surf-payment-release-v2", status="review")

    response = admin_api.post(f"/v1/controlplane/surfaces/{SURFACE}/deprecate", deprecate_body(), format="json")

    assert response.status_code == 200
    assert response.json() == {
        "surface_id": SURFACE,
        "status": "deprecated",
        "deprecation_reason": "Superseded by surf-payment-release-v2",
        "successor_surface_id": "surf-payment-release-v2",
    }
    [record] = audit_records(resource_id=SURFACE)
    assert (record.action, record.actor) == ("deprecate", "gov-lead")
    assert record.details["successor_surface_id"] == "surf-payment-release-v2"


def test_deprecating_without_a_successor_leaves_it_empty(admin_api, organization):
    factories.surface(organization, key=SURFACE, status="active")

    response = admin_api.post(
        f"/v1/controlplane/surfaces/{SURFACE}/deprecate", deprecate_body(successor_id=None), format="json"
    )

    assert response.status_code == 200
    assert response.json()["successor_surface_id"] == ""


def test_deprecating_deprecates_every_active_version(admin_api, organization):
    factories.surface(organization, key=SURFACE, version=1, status="active")
    factories.surface(organization, key=SURFACE, version=2, status="active")
    factories.surface(organization, key=SURFACE, version=3, status="review")

    response = admin_api.post(
        f"/v1/controlplane/surfaces/{SURFACE}/deprecate", deprecate_body(successor_id=None), format="json"
    )

    assert response.status_code == 200
    statuses = dict(Surface.objects.filter(key=SURFACE).values_list("version", "status"))
    assert statuses == {1: "deprecated", 2: "deprecated", 3: "review"}
    assert sorted(r.resource_version for r in audit_records()) == [1, 2]


@pytest.mark.parametrize("missing", ["deprecated_by", "reason"])
def test_deprecating_without_a_required_field_is_400(admin_api, organization, missing):
    factories.surface(organization, key=SURFACE, status="active")

    response = admin_api.post(
        f"/v1/controlplane/surfaces/{SURFACE}/deprecate", deprecate_body(**{missing: None}), format="json"
    )

    assert response.status_code == 400
    assert missing in response.json()["error"]
    assert Surface.objects.get(key=SURFACE).status == "active"


def test_deprecating_with_an_unknown_successor_is_400(admin_api, organization):
    factories.surface(organization, key=SURFACE, status="active")

    response = admin_api.post(f"/v1/controlplane/surfaces/{SURFACE}/deprecate", deprecate_body(), format="json")

    assert response.status_code == 400
    assert "successor_id" in response.json()["error"]
    assert Surface.objects.get(key=SURFACE).status == "active"


def test_deprecating_an_unknown_surface_is_404(admin_api):
    response = admin_api.post("/v1/controlplane/surfaces/surf-nope/deprecate", deprecate_body(), format="json")

    assert response.status_code == 404


def test_deprecating_a_surface_not_active_is_409(admin_api, review_surface):
    response = admin_api.post(
        f"/v1/controlplane/surfaces/{SURFACE}/deprecate", deprecate_body(successor_id=None), format="json"
    )

    assert response.status_code == 409
    assert "active" in response.json()["error"]


def test_a_governance_approver_may_deprecate_but_an_operator_may_not(client_with, organization):
    factories.surface(organization, key=SURFACE, status="active")
    url = f"/v1/controlplane/surfaces/{SURFACE}/deprecate"

    denied = client_with(Role.PLATFORM_OPERATOR).post(url, deprecate_body(successor_id=None), format="json")
    allowed = client_with(Role.GOVERNANCE_APPROVER).post(url, deprecate_body(successor_id=None), format="json")

    assert denied.status_code == 403
    assert denied.json() == {"error": "forbidden", "required_permission": "controlplane:lifecycle"}
    assert allowed.status_code == 200


# --- POST /v1/controlplane/profiles/{id}/approve|deprecate -----------------------------------

PROFILE = "prof-payment-limits"


def test_approving_a_review_profile_version_answers_as_midas_does(admin_api, organization):
    factories.profile(organization, key=PROFILE, version=1, status="active")
    factories.profile(organization, key=PROFILE, version=2, status="review")

    response = admin_api.post(
        f"/v1/controlplane/profiles/{PROFILE}/approve", {"version": 2, "approved_by": "someone"}, format="json"
    )

    assert response.status_code == 200
    assert response.json() == {"profile_id": PROFILE, "version": 2, "status": "active", "approved_by": "gov-lead"}
    profile = Profile.objects.get(key=PROFILE, version=2)
    assert profile.approved_at is not None
    [record] = audit_records(resource_id=PROFILE)
    assert (record.resource_kind, record.resource_version, record.action) == ("Profile", 2, "approve")


def test_the_principal_that_applied_a_profile_cannot_approve_it(admin_api, organization):
    """A profile's thresholds are authority just as a surface is: maker-checker holds for it too."""
    factories.surface(organization, key=SURFACE)
    bundle = (
        b"apiVersion: midas.accept.io/v1\nkind: Profile\nmetadata: {id: prof-payment-limits}\n"
        b"spec: {surface_id: surf-payment-release, lifecycle: {status: active}}\n"
    )
    applied = admin_api.post("/v1/controlplane/apply", data=bundle, content_type="application/yaml")
    assert applied.json()["results"] == [{"kind": "Profile", "id": PROFILE, "status": "created", "version": 1}]

    response = admin_api.post(
        f"/v1/controlplane/profiles/{PROFILE}/approve", {"version": 1, "approved_by": "someone-else"}, format="json"
    )

    assert response.status_code == 409
    assert response.json() == {"error": "maker-checker: the submitter cannot approve their own profile"}
    profile = Profile.objects.get(key=PROFILE, version=1)
    assert (profile.status, profile.submitted_by) == ("review", "gov-lead")
    assert audit_records(resource_id=PROFILE, action="approve") == []


def test_another_admin_approves_the_profile_someone_applied(admin_api, make_person, organization):
    factories.profile(organization, key=PROFILE, version=1, status="review", submitted_by="Gov.Lead@example.com")
    other = client_for(make_person(roles=[Role.PLATFORM_ADMIN], username="checker"), Role.PLATFORM_ADMIN)

    body = {"version": 1, "approved_by": "x"}
    refused = admin_api.post(f"/v1/controlplane/profiles/{PROFILE}/approve", body, format="json")
    approved = other.post(f"/v1/controlplane/profiles/{PROFILE}/approve", body, format="json")

    assert refused.status_code == 409
    assert approved.status_code == 200
    assert approved.json()["approved_by"] == "checker"


@pytest.mark.parametrize(
    "body",
    [
        {"version": 0, "approved_by": "x"},
        {"version": -1, "approved_by": "x"},
        {"approved_by": "x"},
        {"version": "one", "approved_by": "x"},
        {"version": 1},
        {"version": 1, "approved_by": ""},
        {"version": 10**20, "approved_by": "x"},
    ],
)
def test_approving_a_profile_with_a_bad_body_is_400(admin_api, organization, body):
    factories.profile(organization, key=PROFILE, status="review")

    response = admin_api.post(f"/v1/controlplane/profiles/{PROFILE}/approve", body, format="json")

    assert response.status_code == 400
    assert "error" in response.json()


@pytest.mark.parametrize("bad_id", ["Prof-Upper", "prof$x", "prof-a%0A", "x" * 256])
def test_approving_a_profile_with_an_invalid_identifier_is_400(admin_api, bad_id):
    response = admin_api.post(
        f"/v1/controlplane/profiles/{bad_id}/approve", {"version": 1, "approved_by": "x"}, format="json"
    )

    assert response.status_code == 400
    assert response.json() == {"error": "invalid profile id"}


def test_approving_an_unknown_profile_or_version_is_404(admin_api, organization):
    factories.profile(organization, key=PROFILE, version=1, status="review")
    url = "/v1/controlplane/profiles/{}/approve"

    unknown = admin_api.post(url.format("prof-nope"), {"version": 1, "approved_by": "x"}, format="json")
    no_version = admin_api.post(url.format(PROFILE), {"version": 7, "approved_by": "x"}, format="json")

    assert unknown.status_code == 404
    assert no_version.status_code == 404
    assert "version 7" in no_version.json()["error"]


def test_approving_a_profile_not_in_review_is_409(admin_api, organization):
    factories.profile(organization, key=PROFILE, status="active")

    response = admin_api.post(
        f"/v1/controlplane/profiles/{PROFILE}/approve", {"version": 1, "approved_by": "x"}, format="json"
    )

    assert response.status_code == 409
    assert "review" in response.json()["error"]


def test_deprecating_an_active_profile_version_answers_as_midas_does(admin_api, organization):
    factories.profile(organization, key=PROFILE, status="active")

    response = admin_api.post(
        f"/v1/controlplane/profiles/{PROFILE}/deprecate", {"version": 1, "deprecated_by": "x"}, format="json"
    )

    assert response.status_code == 200
    assert response.json() == {"profile_id": PROFILE, "version": 1, "status": "deprecated"}
    [record] = audit_records(resource_id=PROFILE)
    assert (record.action, record.actor) == ("deprecate", "gov-lead")


@pytest.mark.parametrize("body", [{"version": 1}, {"deprecated_by": "x"}, {"version": 0, "deprecated_by": "x"}])
def test_deprecating_a_profile_with_a_bad_body_is_400(admin_api, organization, body):
    factories.profile(organization, key=PROFILE, status="active")

    response = admin_api.post(f"/v1/controlplane/profiles/{PROFILE}/deprecate", body, format="json")

    assert response.status_code == 400


def test_deprecating_a_profile_not_active_is_409(admin_api, organization):
    factories.profile(organization, key=PROFILE, status="review")

    response = admin_api.post(
        f"/v1/controlplane/profiles/{PROFILE}/deprecate", {"version": 1, "deprecated_by": "x"}, format="json"
    )

    assert response.status_code == 409


def test_deprecating_an_unknown_profile_is_404(admin_api):
    response = admin_api.post(
        "/v1/controlplane/profiles/prof-nope/deprecate", {"version": 1, "deprecated_by": "x"}, format="json"
    )

    assert response.status_code == 404


# --- POST /v1/controlplane/grants/{id}/suspend|revoke|reinstate ----------------------------

GRANT = "grant-payments-agent-standard"


@pytest.fixture
def active_grant(organization):
    agent = factories.agent(organization, key="agent-payments-prod")
    return factories.grant(organization, key=GRANT, agent_=agent, profile_key=PROFILE, granted_by="ops")


def test_suspending_an_active_grant_returns_the_grant(admin_api, active_grant):
    response = admin_api.post(f"/v1/controlplane/grants/{GRANT}/suspend", {"reason": "incident 42"}, format="json")

    assert response.status_code == 200
    body = response.json()
    assert set(body) == {
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
    assert (body["id"], body["agent_id"], body["profile_id"], body["status"], body["granted_by"]) == (
        GRANT,
        "agent-payments-prod",
        PROFILE,
        "suspended",
        "ops",
    )
    [record] = audit_records(resource_id=GRANT)
    assert (record.resource_kind, record.action, record.actor) == ("Grant", "suspend", "gov-lead")
    assert record.details["reason"] == "incident 42"


def test_a_suspended_grant_can_be_reinstated_then_revoked(admin_api, active_grant):
    url = f"/v1/controlplane/grants/{GRANT}/"
    statuses = [
        admin_api.post(url + action, {"by": "x", "reason": "r"}, format="json").json()["status"]
        for action in ("suspend", "reinstate", "revoke")
    ]

    assert statuses == ["suspended", "active", "revoked"]
    assert [r.action for r in ControlPlaneAuditRecord.objects.order_by("occurred_at")] == [
        "suspend",
        "reinstate",
        "revoke",
    ]


@pytest.mark.parametrize(
    "status, action",
    [("revoked", "reinstate"), ("revoked", "suspend"), ("revoked", "revoke"), ("active", "reinstate"),
     ("suspended", "suspend")],
)  # fmt: skip
def test_an_illegal_grant_transition_is_409(admin_api, active_grant, status, action):
    Grant.objects.filter(pk=active_grant.pk).update(status=status)

    response = admin_api.post(f"/v1/controlplane/grants/{GRANT}/{action}", {"reason": "r"}, format="json")

    assert response.status_code == 409
    assert status in response.json()["error"]
    assert Grant.objects.get(pk=active_grant.pk).status == status


def test_a_grant_transition_without_a_reason_is_400(admin_api, active_grant):
    response = admin_api.post(f"/v1/controlplane/grants/{GRANT}/revoke", {"by": "x"}, format="json")

    assert response.status_code == 400
    assert "reason" in response.json()["error"]


def test_a_transition_of_an_unknown_grant_is_404(admin_api):
    response = admin_api.post("/v1/controlplane/grants/grant-nope/revoke", {"reason": "r"}, format="json")

    assert response.status_code == 404


def test_a_viewer_cannot_change_a_grant(client_with, active_grant):
    response = client_with(Role.PLATFORM_VIEWER).post(
        f"/v1/controlplane/grants/{GRANT}/revoke", {"reason": "r"}, format="json"
    )

    assert response.status_code == 403
    assert response.json() == {"error": "forbidden", "required_permission": "controlplane:lifecycle"}


# --- rules, through the services -------------------------------------------------------


@pytest.mark.parametrize("current", list(GrantStatus))
@pytest.mark.parametrize("action", list(lifecycle.GRANT_ACTIONS))
def test_grant_actions_follow_the_declared_transitions(organization, current, action):
    grant = factories.grant(organization, status=current)
    target = lifecycle.GRANT_ACTIONS[action]
    principal = Principal("ops", frozenset({"ops"}), is_admin=True)

    if target in GRANT_TRANSITIONS[current]:
        changed = lifecycle.change_grant_status(
            organization=organization, grant_id=grant.key, action=action, principal=principal, reason="r"
        )
        assert changed.status == target
    else:
        with pytest.raises(Conflict):
            lifecycle.change_grant_status(
                organization=organization, grant_id=grant.key, action=action, principal=principal, reason="r"
            )
        assert Grant.objects.get(pk=grant.pk).status == current


def test_a_principal_is_known_by_username_email_and_uuid(make_person):
    person = make_person(username="Alice", email="alice@Example.com")

    principal = Principal.of(person, frozenset({Role.GOVERNANCE_APPROVER}))

    assert principal.name == "Alice"
    assert not principal.is_admin
    assert principal.is_one_of("alice")
    assert principal.is_one_of("ALICE@example.com")
    assert principal.is_one_of(str(person.pk).upper())
    assert not principal.is_one_of("bob", "", None)


def test_a_rejected_approval_changes_nothing(organization):
    surface = factories.surface(organization, key=SURFACE, status="review", submitted_by="alice")
    principal = Principal("alice", frozenset({"alice"}), is_admin=True)

    with pytest.raises(Conflict):
        lifecycle.approve_surface(
            organization=organization, surface_id=SURFACE, principal=principal, submitted_by="someone"
        )

    surface.refresh_from_db()
    assert (surface.status, surface.approved_by, surface.approved_at) == ("review", "", None)
    assert audit_records() == []


# --- concurrency (PostgreSQL) --------------------------------------------------------------


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_two_simultaneous_approvals_of_one_surface_let_exactly_one_succeed(make_person, organization, monkeypatch):
    factories.surface(organization, key=SURFACE, status="review", submitted_by="maker")
    clients = [
        client_for(make_person(roles=[Role.PLATFORM_ADMIN], username=f"checker-{n}"), Role.PLATFORM_ADMIN)
        for n in range(2)
    ]
    real_record = lifecycle.record_controlplane_change

    def slow_record(**fields):
        # Widen the window between reading the row and committing, where a missing lock would let both pass.
        time.sleep(0.3)
        return real_record(**fields)

    monkeypatch.setattr(lifecycle, "record_controlplane_change", slow_record)
    barrier = threading.Barrier(2)
    statuses = []

    def approve(client):
        try:
            barrier.wait()
            response = client.post(f"/v1/controlplane/surfaces/{SURFACE}/approve", approve_body(), format="json")
            statuses.append(response.status_code)
        finally:
            connection.close()

    threads = [threading.Thread(target=approve, args=(client,)) for client in clients]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(statuses) == [200, 409]
    assert ControlPlaneAuditRecord.objects.filter(resource_id=SURFACE, action="approve").count() == 1
    assert Surface.objects.get(key=SURFACE).status == "active"
