import io
import re
import uuid

import pytest
from allauth.account.signals import password_changed
from django.core.management import call_command
from django.test import RequestFactory
from rest_framework.test import APIClient

from evidence.models import AdminAuditRecord
from governance.choices import Role
from governance.models import Person
from governance.services.passwords import PasswordChangeRejected, change_password
from governance.services.tokens import issue_token

pytestmark = pytest.mark.django_db

PASSWORD = "first-Password-1"
NEW_PASSWORD = "a-much-Better-passw0rd"


@pytest.fixture(autouse=True)
def fresh_rate_limits(settings):
    """allauth counts failed sign-ins in the cache: give each test its own, private one
    (never flush a shared Redis, which other processes and the Celery broker use)."""
    settings.CACHES = {
        "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": uuid.uuid4().hex}
    }


@pytest.fixture
def person(make_person):
    return make_person(roles=[Role.PLATFORM_ADMIN], username="carol", password=PASSWORD)


def signed_in(username="carol", password=PASSWORD, *, csrf=False) -> APIClient:
    client = APIClient(enforce_csrf_checks=csrf)
    response = client.post("/auth/login", {"username": username, "password": password}, format="json")
    assert response.status_code == 200, response.content
    return client


def csrf_header(client) -> dict:
    return {"HTTP_X_CSRFTOKEN": client.cookies["csrftoken"].value}


# --- POST /auth/login ------------------------------------------------------------------


def test_login_returns_the_user_and_starts_a_session(person):
    client = APIClient()
    response = client.post("/auth/login", {"username": "carol", "password": PASSWORD}, format="json")
    assert response.status_code == 200
    assert response.json() == {
        "user": {
            "id": str(person.pk),
            "username": "carol",
            "roles": ["platform.admin", "platform.operator", "platform.viewer"],
            "must_change_password": False,
        }
    }
    assert client.cookies["sessionid"].value
    assert client.get("/v1/platform/admin-audit").status_code == 200


@pytest.mark.parametrize("username, password", [("carol", "wrong-password"), ("nobody", PASSWORD)])
def test_wrong_credentials_are_401(person, username, password):
    response = APIClient().post("/auth/login", {"username": username, "password": password}, format="json")
    assert response.status_code == 401
    assert response.json() == {"error": "invalid credentials"}


def test_deactivated_person_cannot_sign_in(person):
    Person.objects.filter(pk=person.pk).update(is_active=False)
    response = APIClient().post("/auth/login", {"username": "carol", "password": PASSWORD}, format="json")
    assert response.status_code == 401
    assert response.json() == {"error": "invalid credentials"}


@pytest.mark.parametrize(
    "body",
    [{}, {"username": "carol"}, {"password": PASSWORD}, {"username": "", "password": ""}, {"username": ["carol"]}],
)
def test_login_with_missing_fields_is_400(person, body):
    response = APIClient().post("/auth/login", body, format="json")
    assert response.status_code == 400
    assert set(response.json()) == {"error"}


def test_overlong_password_is_400_without_hashing_it(person):
    response = APIClient().post("/auth/login", {"username": "carol", "password": "x" * 5000}, format="json")
    assert response.status_code == 400


def test_login_body_that_is_not_json_is_refused(person):
    client = APIClient()
    assert client.post("/auth/login", "{not json", content_type="application/json").status_code == 400
    form = client.post("/auth/login", "username=carol&password=x", content_type="application/x-www-form-urlencoded")
    assert form.status_code == 415


def test_login_needs_no_csrf_token_and_hands_one_out(person):
    client = signed_in(csrf=True)
    assert client.cookies["csrftoken"].value


def test_repeated_failed_logins_are_throttled(person):
    client = APIClient()
    statuses = [
        client.post("/auth/login", {"username": "carol", "password": "wrong"}, format="json").status_code
        for _ in range(8)
    ]
    assert statuses[0] == 401
    assert statuses[-1] == 429
    # While throttled, even the right password is refused.
    response = client.post("/auth/login", {"username": "carol", "password": PASSWORD}, format="json")
    assert response.status_code == 429
    assert "error" in response.json()


# --- POST /auth/logout -----------------------------------------------------------------


def test_logout_ends_the_session(person):
    client = signed_in()
    assert client.post("/auth/logout").status_code == 204
    assert client.get("/v1/platform/admin-audit").status_code == 401


def test_logout_without_credentials_is_401():
    assert APIClient().post("/auth/logout").status_code == 401


def test_logout_with_a_session_needs_the_csrf_token(person):
    client = signed_in(csrf=True)
    assert client.post("/auth/logout").status_code == 403
    assert client.post("/auth/logout", **csrf_header(client)).status_code == 204


# --- POST /auth/change-password --------------------------------------------------------


def test_change_password_keeps_this_session_and_audits_the_change(person):
    client = signed_in()
    response = client.post(
        "/auth/change-password",
        {"current_password": PASSWORD, "new_password": NEW_PASSWORD},
        format="json",
        HTTP_X_REQUEST_ID="req-123",
    )
    assert response.status_code == 200
    assert response.json() == {"status": "password_changed"}
    assert client.get("/v1/platform/admin-audit").status_code == 200  # session still valid

    person.refresh_from_db()
    assert person.check_password(NEW_PASSWORD)
    record = AdminAuditRecord.objects.get(action="password.changed")
    assert (record.actor_type, record.actor_id, record.target_type, record.target_id) == (
        "user",
        str(person.pk),
        "user",
        str(person.pk),
    )
    assert (record.outcome, record.request_id, record.client_ip) == ("success", "req-123", "127.0.0.1")
    assert record.organization_id == person.organization_id
    stored = str(AdminAuditRecord.objects.filter(pk=record.pk).values().get())
    assert PASSWORD not in stored and NEW_PASSWORD not in stored


def test_after_a_password_change_only_the_new_password_signs_in(person):
    client = signed_in()
    client.post("/auth/change-password", {"current_password": PASSWORD, "new_password": NEW_PASSWORD}, format="json")
    old = APIClient().post("/auth/login", {"username": "carol", "password": PASSWORD}, format="json")
    assert old.status_code == 401
    signed_in(password=NEW_PASSWORD)


def test_a_password_change_ends_the_persons_other_sessions(person):
    other = signed_in()
    client = signed_in()
    client.post("/auth/change-password", {"current_password": PASSWORD, "new_password": NEW_PASSWORD}, format="json")
    assert other.get("/v1/platform/admin-audit").status_code == 401


def test_wrong_current_password_is_400_and_changes_nothing(person):
    client = signed_in()
    response = client.post(
        "/auth/change-password", {"current_password": "nope", "new_password": NEW_PASSWORD}, format="json"
    )
    assert response.status_code == 400
    assert response.json() == {"error": "current password is incorrect"}
    person.refresh_from_db()
    assert person.check_password(PASSWORD)
    assert not AdminAuditRecord.objects.exists()


def test_weak_new_password_is_400_listing_every_problem(person):
    client = signed_in()
    response = client.post(
        "/auth/change-password", {"current_password": PASSWORD, "new_password": "1234"}, format="json"
    )
    assert response.status_code == 400
    body = response.json()
    assert body["error"] == "new password rejected"
    problems = " ".join(body["problems"])
    assert "too short" in problems and "too common" in problems and "entirely numeric" in problems
    assert not AdminAuditRecord.objects.exists()


def test_new_password_equal_to_the_current_one_is_rejected(person):
    with pytest.raises(PasswordChangeRejected) as rejected:
        change_password(person, PASSWORD, PASSWORD)
    assert rejected.value.problems == ["The new password must differ from the current password."]


@pytest.mark.parametrize("body", [{}, {"current_password": PASSWORD}, {"new_password": NEW_PASSWORD}])
def test_change_password_with_missing_fields_is_400(person, body):
    response = signed_in().post("/auth/change-password", body, format="json")
    assert response.status_code == 400
    assert set(response.json()) == {"error"}


def test_change_password_with_a_session_needs_the_csrf_token(person):
    client = signed_in(csrf=True)
    body = {"current_password": PASSWORD, "new_password": NEW_PASSWORD}
    assert client.post("/auth/change-password", body, format="json").status_code == 403
    assert client.post("/auth/change-password", body, format="json", **csrf_header(client)).status_code == 200


def test_change_password_unauthenticated_is_401():
    body = {"current_password": PASSWORD, "new_password": NEW_PASSWORD}
    assert APIClient().post("/auth/change-password", body, format="json").status_code == 401


def test_change_password_with_a_bearer_token_changes_the_tokens_person(person):
    _, secret = issue_token(person, "script", [Role.PLATFORM_VIEWER])
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
    body = {"current_password": PASSWORD, "new_password": NEW_PASSWORD}
    assert client.post("/auth/change-password", body, format="json").status_code == 200
    person.refresh_from_db()
    assert person.check_password(NEW_PASSWORD)


def test_open_mode_has_no_password_to_change(settings):
    settings.MANDATE_AUTH_MODE = "open"
    body = {"current_password": PASSWORD, "new_password": NEW_PASSWORD}
    response = APIClient().post("/auth/change-password", body, format="json")
    assert response.status_code == 403


# --- must_change_password ------------------------------------------------------------


@pytest.fixture
def bootstrap_person(make_person):
    return make_person(roles=[Role.PLATFORM_ADMIN], username="boot", password=PASSWORD, must_change_password=True)


def test_session_that_must_change_its_password_may_call_nothing_else(bootstrap_person):
    client = APIClient()
    login = client.post("/auth/login", {"username": "boot", "password": PASSWORD}, format="json")
    assert login.json()["user"]["must_change_password"] is True

    response = client.get("/v1/platform/admin-audit")
    assert response.status_code == 403
    assert response.json() == {
        "error": "password change required",
        "change_password_url": "/accounts/password/change/",
        "change_password_api": "/auth/change-password",
    }

    body = {"current_password": PASSWORD, "new_password": NEW_PASSWORD}
    assert client.post("/auth/change-password", body, format="json").status_code == 200
    bootstrap_person.refresh_from_db()
    assert bootstrap_person.must_change_password is False
    assert client.get("/v1/platform/admin-audit").status_code == 200


def test_session_that_must_change_its_password_may_log_out(bootstrap_person):
    client = signed_in("boot")
    assert client.post("/auth/logout").status_code == 204


def test_bearer_tokens_are_not_held_back_by_a_pending_password_change(bootstrap_person):
    _, secret = issue_token(bootstrap_person, "ci", [Role.PLATFORM_ADMIN])
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
    assert client.get("/v1/platform/admin-audit").status_code == 200


def test_password_changed_in_the_browser_is_audited_and_clears_the_requirement(bootstrap_person):
    request = RequestFactory().post("/accounts/password/change/", REMOTE_ADDR="10.0.0.9")
    password_changed.send(sender=Person, request=request, user=bootstrap_person)
    bootstrap_person.refresh_from_db()
    assert bootstrap_person.must_change_password is False
    record = AdminAuditRecord.objects.get(action="password.changed")
    assert (record.actor_id, record.target_id, record.client_ip) == (str(bootstrap_person.pk),) * 2 + ("10.0.0.9",)
    assert record.details == {"via": "browser", "flow": "change"}


def test_password_changed_through_the_allauth_form_is_audited(bootstrap_person, client):
    client.force_login(bootstrap_person)
    response = client.post(
        "/accounts/password/change/",
        {"oldpassword": PASSWORD, "password1": NEW_PASSWORD, "password2": NEW_PASSWORD},
    )
    assert response.status_code == 302
    assert AdminAuditRecord.objects.filter(action="password.changed", target_id=str(bootstrap_person.pk)).count() == 1


# --- bootstrap ------------------------------------------------------------------------


def test_bootstrap_records_the_admin_creation_once():
    out = io.StringIO()
    call_command("bootstrap_demo", stdout=out)
    call_command("bootstrap_demo", stdout=io.StringIO())
    admin = Person.objects.get(username="admin")
    record = AdminAuditRecord.objects.get(action="bootstrap.admin_created")
    assert (record.actor_type, record.actor_id, record.target_type, record.target_id) == (
        "system",
        "system:bootstrap",
        "user",
        str(admin.pk),
    )
    password = re.search(r"password '([^']+)'", out.getvalue()).group(1)
    assert password not in str(list(AdminAuditRecord.objects.values()))
