import io
import re
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from django.core.management import call_command
from django.test import RequestFactory
from rest_framework.test import APIClient

from evidence.models import AdminAuditRecord
from evidence.services.audit_trails import record_admin_action
from governance.api.request_meta import client_ip_of, request_id_of
from governance.choices import Role
from governance.services.people import create_person, ensure_organization
from governance.services.tokens import issue_token
from tests.database_roles import as_owner_unguarded
from tests.test_auth_endpoints import fresh_rate_limits  # noqa: F401  (fixture)

pytestmark = pytest.mark.django_db

URL = "/v1/platform/admin-audit"
ENTRY_FIELDS = {
    "id",
    "occurred_at",
    "action",
    "outcome",
    "actor_type",
    "actor_id",
    "target_type",
    "target_id",
    "request_id",
    "client_ip",
    "required_permission",
    "details",
}
T0 = datetime(2026, 4, 18, 9, 12, 4, 113456, tzinfo=UTC)


def record(organization, *, at=T0, **fields):
    fields = {"action": "apply.invoked", "actor_type": "user", "actor_id": "user-alice", **fields}
    entry = record_admin_action(organization_id=organization.pk if organization else None, **fields)
    with as_owner_unguarded("evidence_adminauditrecord"):
        AdminAuditRecord.objects.filter(pk=entry.pk).update(occurred_at=at)
    return entry


def client_for(person, *roles) -> APIClient:
    _, secret = issue_token(person, "test", roles)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
    return client


def test_unauthenticated_is_401(api_client):
    response = api_client.get(URL)
    assert response.status_code == 401
    assert response.json() == {"error": "unauthenticated"}


@pytest.mark.parametrize("role", [Role.PLATFORM_VIEWER, Role.PLATFORM_OPERATOR, Role.GOVERNANCE_APPROVER])
def test_anyone_but_a_platform_admin_is_403(client_with, role):
    response = client_with(role).get(URL)
    assert response.status_code == 403
    assert response.json() == {"error": "forbidden", "required_permission": "platform:admin-audit"}


def test_entries_have_the_reference_shape_newest_first(organization, admin_client_api):
    older = record(
        organization,
        at=T0,
        target_type="bundle",
        request_id="req-abc-123",
        client_ip="10.0.0.42",
        required_permission="controlplane:apply",
        details={"bundle_bytes": 1247, "created_count": 3},
    )
    newer = record(organization, at=T0 + timedelta(seconds=1), action="password.changed", target_type="user")

    response = admin_client_api.get(URL)
    assert response.status_code == 200
    body = response.json()
    assert list(body) == ["entries"]
    assert [entry["id"] for entry in body["entries"]] == [str(newer.pk), str(older.pk)]
    assert set(body["entries"][1]) == ENTRY_FIELDS
    assert body["entries"][1] == {
        "id": str(older.pk),
        "occurred_at": "2026-04-18T09:12:04.113Z",
        "action": "apply.invoked",
        "outcome": "success",
        "actor_type": "user",
        "actor_id": "user-alice",
        "target_type": "bundle",
        "target_id": "",
        "request_id": "req-abc-123",
        "client_ip": "10.0.0.42",
        "required_permission": "controlplane:apply",
        "details": {"bundle_bytes": 1247, "created_count": 3},
    }


@pytest.mark.parametrize(
    "param, value",
    [
        ("action", "password.changed"),
        ("outcome", "failure"),
        ("actor_id", "user-bob"),
        ("target_type", "user"),
        ("target_id", "t-2"),
    ],
)
def test_each_filter_selects_matching_entries(organization, admin_client_api, param, value):
    record(organization, target_type="bundle", target_id="t-1")
    match = record(
        organization,
        action="password.changed",
        outcome="failure",
        actor_id="user-bob",
        target_type="user",
        target_id="t-2",
    )
    response = admin_client_api.get(URL, {param: value})
    assert response.status_code == 200
    assert [entry["id"] for entry in response.json()["entries"]] == [str(match.pk)]


def test_filters_combine_and_empty_values_are_ignored(organization, admin_client_api):
    record(organization, target_type="bundle")
    match = record(organization, target_type="user", actor_id="user-bob")
    record(organization, target_type="user", actor_id="user-carol")
    response = admin_client_api.get(URL, {"target_type": "user", "actor_id": "user-bob", "action": ""})
    assert [entry["id"] for entry in response.json()["entries"]] == [str(match.pk)]


def test_limit_defaults_to_50_and_caps_the_count(organization, admin_client_api):
    for index in range(55):
        record(organization, at=T0 + timedelta(seconds=index))
    assert len(admin_client_api.get(URL).json()["entries"]) == 50
    newest = admin_client_api.get(URL, {"limit": 2}).json()["entries"]
    assert [entry["occurred_at"] for entry in newest] == ["2026-04-18T09:12:58.113Z", "2026-04-18T09:12:57.113Z"]
    assert len(admin_client_api.get(URL, {"limit": 500}).json()["entries"]) == 55


@pytest.mark.parametrize("limit", ["0", "-1", "501", "abc", "1.5", "10.0", "+5", " 5", "٣", "9" * 5000])
def test_limit_that_is_not_a_positive_integer_up_to_500_is_400(admin_client_api, limit):
    response = admin_client_api.get(URL, {"limit": limit})
    assert response.status_code == 400
    assert response.json()["error"].startswith("limit:")


def test_filter_with_a_nul_character_is_400_not_500(admin_client_api):
    response = admin_client_api.get(URL, {"action": "apply\x00invoked"})
    assert response.status_code == 400


def test_records_of_other_organizations_are_invisible(organization, admin_client_api):
    other = ensure_organization("globex", "Globex")
    record(other, actor_id="globex-admin")
    mine = record(organization)
    assert [entry["id"] for entry in admin_client_api.get(URL).json()["entries"]] == [str(mine.pk)]


def test_platform_records_are_visible_only_to_the_default_organization_and_superusers(organization, settings):
    platform = record(None, action="bootstrap.admin_created", actor_type="system", actor_id="system:bootstrap")
    acme_admin = create_person(organization, "acme-admin", roles=[Role.PLATFORM_ADMIN])
    acme_superuser = create_person(organization, "acme-root", is_superuser=True)
    default = ensure_organization(settings.MANDATE_DEFAULT_ORGANIZATION, "Default")
    default_admin = create_person(default, "default-admin", roles=[Role.PLATFORM_ADMIN])

    def visible(person):
        response = client_for(person, Role.PLATFORM_ADMIN).get(URL)
        return str(platform.pk) in [entry["id"] for entry in response.json()["entries"]]

    assert not visible(acme_admin)
    assert visible(acme_superuser)
    assert visible(default_admin)


def test_bootstrap_admin_sees_its_creation_and_password_change_after_first_login():
    out = io.StringIO()
    call_command("bootstrap_demo", stdout=out)
    password = re.search(r"user 'admin'\s+password '([^']+)'", out.getvalue()).group(1)

    client = APIClient()
    assert client.post("/auth/login", {"username": "admin", "password": password}, format="json").status_code == 200
    assert client.get(URL).json()["error"] == "password change required"
    body = {"current_password": password, "new_password": "a-much-Better-passw0rd"}
    assert client.post("/auth/change-password", body, format="json").status_code == 200

    entries = [e for e in client.get(URL).json()["entries"] if e["action"] != "bootstrap.person_created"]
    assert [entry["action"] for entry in entries] == ["password.changed", "bootstrap.admin_created"]
    assert entries[1]["actor_type"] == "system" and entries[1]["actor_id"] == "system:bootstrap"
    assert entries[0]["target_id"] == entries[1]["target_id"]


# --- request id and client IP carried by audit records ----------------------------------


def test_request_id_is_the_callers_header_else_a_stable_generated_uuid():
    factory = RequestFactory()
    assert request_id_of(factory.get("/", HTTP_X_REQUEST_ID="req-abc-123")) == "req-abc-123"
    request = factory.get("/")
    generated = request_id_of(request)
    assert uuid.UUID(generated) and request_id_of(request) == generated
    assert request_id_of(factory.get("/", HTTP_X_REQUEST_ID="has spaces\n")) != "has spaces\n"
    assert len(request_id_of(factory.get("/", HTTP_X_REQUEST_ID="x" * 1000))) == 36


def test_client_ip_ignores_forwarded_for_unless_behind_a_configured_proxy(settings):
    factory = RequestFactory()
    forwarded = factory.get("/", REMOTE_ADDR="10.0.0.1", HTTP_X_FORWARDED_FOR="6.6.6.6, 203.0.113.7")
    settings.SECURE_PROXY_SSL_HEADER = None
    assert client_ip_of(forwarded) == "10.0.0.1"
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    assert client_ip_of(forwarded) == "203.0.113.7"  # the entry our proxy appended
    garbage = factory.get("/", REMOTE_ADDR="10.0.0.1", HTTP_X_FORWARDED_FOR="not-an-ip")
    assert client_ip_of(garbage) == "10.0.0.1"
