from datetime import timedelta

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from governance.choices import Role
from governance.models import ApiToken
from governance.services.tokens import issue_token, revoke_token

pytestmark = [pytest.mark.django_db, pytest.mark.urls("tests.probe_urls")]


def test_missing_token_is_401_with_error_and_challenge(api_client):
    response = api_client.get("/v1/probe/echo")
    assert response.status_code == 401
    assert response.json() == {"error": "unauthenticated"}
    assert response["WWW-Authenticate"].startswith("Bearer")


@pytest.mark.parametrize(
    "header",
    ["Bearer mdt_000000000000_wrong", "Bearer mdt_garbage", "Bearer mdt_", "Bearer mdt_a_b_c"],
)
def test_wrong_token_is_401(api_client, make_token, header):
    make_token(Role.PLATFORM_ADMIN)
    api_client.credentials(HTTP_AUTHORIZATION=header)
    response = api_client.get("/v1/probe/echo")
    assert response.status_code == 401
    assert "error" in response.json() and "detail" not in response.json()


def test_right_token_authenticates_as_its_principal(make_person):
    person = make_person()
    _, secret = issue_token(person, "ci", [Role.PLATFORM_VIEWER])
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
    response = client.get("/v1/probe/echo")
    assert response.status_code == 200
    assert response.json() == {"principal": str(person.pk), "kind": "token"}


def test_token_without_the_role_is_403_naming_the_permission(client_with):
    client = client_with(Role.PLATFORM_VIEWER)
    response = client.post("/v1/probe/echo", {"name": "x", "count": 1}, format="json")
    assert response.status_code == 403
    assert response.json() == {"error": "forbidden", "required_permission": "platform.operator"}


def test_admin_role_implies_operator_and_viewer(client_with):
    client = client_with(Role.PLATFORM_ADMIN)
    assert client.get("/v1/probe/echo").status_code == 200
    assert client.post("/v1/probe/echo", {"name": "x", "count": 1}, format="json").status_code == 200


def test_legacy_role_aliases_are_accepted(make_person):
    _, secret = issue_token(make_person(), "legacy", ["operator"])
    assert ApiToken.objects.get().roles == ["platform.operator"]
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
    assert client.post("/v1/probe/echo", {"name": "x", "count": 1}, format="json").status_code == 200


def test_secret_is_stored_only_as_a_hash(make_person):
    token, secret = issue_token(make_person(), "t", [Role.PLATFORM_VIEWER])
    stored = ApiToken.objects.filter(pk=token.pk).values().get()
    assert all(secret not in str(value) for value in stored.values())
    assert secret.split("_", 2)[2] not in str(stored)


def test_revoked_and_expired_tokens_are_refused(make_person):
    token, secret = issue_token(make_person(), "t", [Role.PLATFORM_VIEWER])
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
    assert client.get("/v1/probe/echo").status_code == 200
    revoke_token(token)
    assert client.get("/v1/probe/echo").status_code == 401

    expired, secret2 = issue_token(
        make_person(), "t2", [Role.PLATFORM_VIEWER], expires_at=timezone.now() - timedelta(seconds=1)
    )
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {secret2}")
    assert client.get("/v1/probe/echo").status_code == 401


def test_token_of_a_deactivated_person_is_refused(make_person):
    person = make_person()
    _, secret = issue_token(person, "t", [Role.PLATFORM_VIEWER])
    person.is_active = False
    person.save()
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
    assert client.get("/v1/probe/echo").status_code == 401


def test_session_person_gets_their_assigned_roles_and_csrf_is_enforced(make_person):
    person = make_person(roles=[Role.PLATFORM_VIEWER])
    client = APIClient(enforce_csrf_checks=True)
    client.force_login(person)
    assert client.get("/v1/probe/echo").json()["kind"] == "session"
    response = client.post("/v1/probe/echo", {"name": "x", "count": 1}, format="json")
    assert response.status_code == 403  # no CSRF token, and no operator role either


def test_open_mode_lets_unauthenticated_calls_through(api_client, settings):
    settings.MANDATE_AUTH_MODE = "open"
    response = api_client.get("/v1/probe/echo")
    assert response.status_code == 200
    assert response.json()["kind"] == "open"


def test_open_mode_still_rejects_a_bad_token(api_client, settings):
    settings.MANDATE_AUTH_MODE = "open"
    api_client.credentials(HTTP_AUTHORIZATION="Bearer mdt_000000000000_nope")
    assert api_client.get("/v1/probe/echo").status_code == 401


def test_audit_verify_needs_operator(client_with):
    assert client_with(Role.PLATFORM_VIEWER).get("/v1/audit/verify").status_code == 403
    response = client_with(Role.PLATFORM_OPERATOR).get("/v1/audit/verify")
    assert response.status_code == 200
    assert response.json() == {"intact": True, "events_checked": 0, "broken_at": None, "receipts_checked": 0}
