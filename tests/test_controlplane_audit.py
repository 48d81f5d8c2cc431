"""GET /v1/controlplane/audit: the control-plane change trail, filtered, newest first, per organization."""

from datetime import UTC, datetime, timedelta

import pytest

from evidence.api.controlplane_audit import controlplane_audit_entries
from evidence.models import ControlPlaneAuditRecord
from evidence.services.audit_trails import record_controlplane_change
from governance.choices import Role
from governance.services.people import ensure_organization
from tests import factories
from tests.database_roles import as_owner_unguarded

pytestmark = pytest.mark.django_db

URL = "/v1/controlplane/audit"
T0 = datetime(2026, 4, 18, 9, 0, tzinfo=UTC)


def record(organization, *, at: datetime, kind="Surface", resource_id="surf-a", action="approve", actor="alice", **kw):
    entry = record_controlplane_change(
        organization_id=organization.pk,
        kind=kind,
        resource_id=resource_id,
        action=action,
        actor=actor,
        summary=f"{action} {resource_id}",
        **kw,
    )
    with as_owner_unguarded("evidence_controlplaneauditrecord"):
        ControlPlaneAuditRecord.objects.filter(pk=entry.pk).update(occurred_at=at)
    return entry


@pytest.fixture
def trail(organization):
    """Four changes an hour apart: surf-a approved by alice, surf-a deprecated by bob,
    prof-a approved by alice, grant-a suspended by carol."""
    return [
        record(organization, at=T0, version=1, details={"submitted_by": "dev"}),
        record(organization, at=T0 + timedelta(hours=1), action="deprecate", actor="bob", version=1),
        record(organization, at=T0 + timedelta(hours=2), kind="Profile", resource_id="prof-a", version=2),
        record(
            organization,
            at=T0 + timedelta(hours=3),
            kind="Grant",
            resource_id="grant-a",
            action="suspend",
            actor="carol",
        ),
    ]


@pytest.fixture
def viewer(client_with):
    return client_with(Role.PLATFORM_VIEWER)


def ids(response):
    return [entry["summary"] for entry in response.json()["entries"]]


def test_a_viewer_reads_the_trail_newest_first(viewer, trail):
    response = viewer.get(URL)

    assert response.status_code == 200
    body = response.json()
    assert body["count"] == 4
    assert ids(response) == ["suspend grant-a", "approve prof-a", "deprecate surf-a", "approve surf-a"]
    oldest = body["entries"][-1]
    assert oldest == {
        "id": str(trail[0].pk),
        "occurred_at": "2026-04-18T09:00:00Z",
        "resource_kind": "Surface",
        "resource_id": "surf-a",
        "resource_version": 1,
        "action": "approve",
        "actor": "alice",
        "summary": "approve surf-a",
        "details": {"submitted_by": "dev"},
    }
    assert body["entries"][0]["resource_version"] is None


@pytest.mark.parametrize(
    "query, expected",
    [
        ("kind=Profile", ["approve prof-a"]),
        ("kind=surface", ["deprecate surf-a", "approve surf-a"]),
        ("resource_kind=Grant", ["suspend grant-a"]),
        ("id=surf-a", ["deprecate surf-a", "approve surf-a"]),
        ("resource_id=prof-a", ["approve prof-a"]),
        ("actor=alice", ["approve prof-a", "approve surf-a"]),
        ("action=deprecate", ["deprecate surf-a"]),
        ("kind=Surface&actor=bob", ["deprecate surf-a"]),
        ("since=2026-04-18T10:00:00Z", ["suspend grant-a", "approve prof-a", "deprecate surf-a"]),
        ("until=2026-04-18T10:00:00Z", ["deprecate surf-a", "approve surf-a"]),
        ("since=2026-04-18T11:00:00%2B01:00&until=2026-04-18T11:00:00.5Z", ["approve prof-a", "deprecate surf-a"]),
        ("limit=2", ["suspend grant-a", "approve prof-a"]),
        ("limit=", ["suspend grant-a", "approve prof-a", "deprecate surf-a", "approve surf-a"]),
        ("id=nothing", []),
    ],
)
def test_filters_narrow_the_trail(viewer, trail, query, expected):
    response = viewer.get(f"{URL}?{query}")

    assert response.status_code == 200
    assert ids(response) == expected
    assert response.json()["count"] == len(expected)


@pytest.mark.parametrize(
    "query",
    [
        "since=yesterday",
        "since=2026-04-18",
        "since=2026-04-18T10:00:00",  # no offset
        "until=2026-02-30T00:00:00Z",
        "until=2026-04-18T10:00:00 01:00",  # an unencoded '+'
        "limit=0",
        "limit=-1",
        "limit=501",
        "limit=abc",
        "limit=3.5",
        "limit=²",
    ],
)
def test_an_invalid_filter_is_400(viewer, trail, query):
    response = viewer.get(f"{URL}?{query}")

    assert response.status_code == 400
    assert query.split("=")[0] in response.json()["error"]


def test_the_limit_defaults_to_100_and_reaches_500(viewer, organization):
    ControlPlaneAuditRecord.objects.bulk_create(
        ControlPlaneAuditRecord(
            organization_id=organization.pk, resource_kind="Grant", resource_id=f"g{n}", action="revoke", actor="a"
        )
        for n in range(501)
    )

    assert viewer.get(URL).json()["count"] == 100
    assert viewer.get(f"{URL}?limit=500").json()["count"] == 500


def test_the_trail_is_scoped_to_the_callers_organization(viewer, trail):
    other = ensure_organization("globex", "Globex")
    record(other, at=T0 + timedelta(hours=9), resource_id="surf-globex")

    summaries = ids(viewer.get(URL))

    assert "approve surf-globex" not in summaries
    assert len(summaries) == 4


@pytest.mark.parametrize("role", [Role.PLATFORM_VIEWER, Role.PLATFORM_OPERATOR, Role.PLATFORM_ADMIN])
def test_viewer_and_above_may_read_the_trail(client_with, role):
    assert client_with(role).get(URL).status_code == 200


def test_a_governance_approver_without_a_platform_role_is_403(client_with):
    response = client_with(Role.GOVERNANCE_APPROVER).get(URL)

    assert response.status_code == 403
    assert response.json() == {"error": "forbidden", "required_permission": "controlplane:read"}


def test_reading_the_trail_unauthenticated_is_401(api_client):
    response = api_client.get(URL)

    assert response.status_code == 401
    assert response.json() == {"error": "unauthenticated"}


def test_the_trail_is_read_only(viewer):
    assert viewer.post(URL, {}, format="json").status_code == 405


def test_a_lifecycle_change_appears_in_the_trail(client_with, organization):
    factories.surface(organization, key="surf-live", status="review")
    admin = client_with(Role.PLATFORM_ADMIN)

    approved = admin.post(
        "/v1/controlplane/surfaces/surf-live/approve", {"submitted_by": "dev", "approver_id": "x"}, format="json"
    )
    response = admin.get(f"{URL}?kind=Surface&id=surf-live")

    [entry] = response.json()["entries"]
    assert (entry["action"], entry["actor"], entry["resource_version"]) == (
        "approve",
        approved.json()["approved_by"],
        1,
    )


def test_the_query_function_applies_inclusive_time_bounds(organization, trail):
    entries = controlplane_audit_entries(organization.pk, since=T0, until=T0 + timedelta(hours=1))

    assert [e.pk for e in entries] == [trail[1].pk, trail[0].pk]
