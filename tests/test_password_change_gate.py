"""A pending password change holds back every page and every session API call.

The URLs are not a hand-picked list: ``tests.url_walk.url_samples`` walks the URL resolver
(admin site, agents, inbox, allauth, APIs) and makes one concrete path per pattern, so a page
added later is covered the day it is added.
"""

from urllib.parse import quote

import pytest
from rest_framework.test import APIClient

from governance.choices import Role
from governance.middleware import PASSWORD_CHANGE_EXEMPT_VIEWS, is_api_path
from governance.models import Person
from governance.services.people import create_person
from governance.services.tokens import issue_token
from tests.url_walk import url_samples

pytestmark = pytest.mark.django_db

PASSWORD = "first-Password-1"
NEW_PASSWORD = "a-much-Better-passw0rd"
CHANGE_PAGE = "/accounts/password/change/"
HELD_BACK = {
    "error": "password change required",
    "change_password_url": CHANGE_PAGE,
    "change_password_api": "/auth/change-password",
}


# --- fixtures -------------------------------------------------------------------------------


@pytest.fixture
def bootstrap_admin(organization):
    return create_person(
        organization,
        "boot",
        password=PASSWORD,
        roles=[Role.PLATFORM_ADMIN, Role.GOVERNANCE_REVIEWER, Role.GOVERNANCE_APPROVER],
        is_superuser=True,
        must_change_password=True,
    )


@pytest.fixture
def held_back(client, bootstrap_admin):
    client.force_login(bootstrap_admin)
    return client


def change_page_with_next(path: str) -> str:
    return f"{CHANGE_PAGE}?next={quote(path, safe='/')}"


# --- every URL --------------------------------------------------------------------------


def test_url_walk_covers_the_console_the_inbox_the_agents_page_and_the_apis():
    """The walk itself: if it silently lost a part of the site, the next test would prove nothing."""
    names = {sample.view_name for sample in url_samples()}
    for expected in (
        "admin:index",  # the inbox
        "admin:envelopes_envelope_review",
        "admin:envelopes_approvalrequest_change",  # a request page
        "admin:envelopes_inbox_live",
        "admin:controlplane_surface_changelist",
        "admin:governance_person_change",
        "agents",
        "front-door",
        "account_login",
        "evaluate",
        "channel-requests",
        "platform-admin-audit",
    ):
        assert expected in names
    assert len(names) > 150


def test_exempt_views_are_only_password_change_sign_out_health_and_favicon():
    exempt = {sample.view_name for sample in url_samples() if sample.view_name in PASSWORD_CHANGE_EXEMPT_VIEWS}
    assert exempt == PASSWORD_CHANGE_EXEMPT_VIEWS
    assert exempt == {
        "account_change_password",
        "account_set_password",
        "account_logout",
        "admin:logout",
        "auth-logout",
        "auth-change-password",
        "healthz",
        "readyz",
        "favicon",
    }


def test_every_url_but_the_exempt_ones_leads_a_pending_password_change_to_the_change_page(held_back):
    wrong = []
    for sample in url_samples():
        if sample.view_name in PASSWORD_CHANGE_EXEMPT_VIEWS:
            continue
        for method in ("get", "post"):
            response = getattr(held_back, method)(sample.path)
            if is_api_path(sample.path):
                ok = response.status_code == 403 and response.json() == HELD_BACK
            else:
                expected = change_page_with_next(sample.path) if method == "get" else change_page_with_next("/")
                ok = response.status_code == 302 and response["Location"] == expected
            if not ok:
                wrong.append(f"{method.upper()} {sample.path} ({sample.route}): {response.status_code}")
    assert wrong == []


def test_exempt_urls_still_answer_while_a_password_change_is_pending(held_back):
    assert held_back.get(CHANGE_PAGE).status_code == 200
    assert held_back.get("/healthz").status_code == 200
    assert held_back.get("/favicon.ico").status_code == 200
    assert held_back.get("/accounts/logout/").status_code == 200  # the "Sign out?" page
    response = held_back.post("/accounts/logout/")
    assert response.status_code == 302
    assert "_auth_user_id" not in held_back.session  # signed out


# --- API calls --------------------------------------------------------------------------


def test_session_api_writes_answer_json_403_naming_where_to_change_it(held_back):
    response = held_back.post("/v1/controlplane/apply", "kind: x", content_type="application/yaml")
    assert response.status_code == 403
    assert response.json() == HELD_BACK


def test_api_tokens_are_not_held_back_even_beside_the_session_cookie(held_back, bootstrap_admin):
    _, secret = issue_token(bootstrap_admin, "ci", [Role.PLATFORM_ADMIN])
    response = held_back.get("/v1/platform/admin-audit", HTTP_AUTHORIZATION=f"Bearer {secret}")
    assert response.status_code == 200


def test_an_authorization_header_no_token_claims_falls_back_to_the_session_and_is_held_back(held_back):
    response = held_back.get("/v1/platform/admin-audit", HTTP_AUTHORIZATION="Basic Ym9vdDp4")
    assert response.status_code == 403
    assert response.json() == HELD_BACK


def test_the_json_login_api_session_is_held_back_with_the_same_answer(bootstrap_admin):
    client = APIClient()
    client.post("/auth/login", {"username": "boot", "password": PASSWORD}, format="json")
    response = client.get("/v1/envelopes")
    assert response.status_code == 403
    assert response.json() == HELD_BACK


def test_an_authorization_header_does_not_open_pages(held_back, bootstrap_admin):
    _, secret = issue_token(bootstrap_admin, "ci", [Role.PLATFORM_ADMIN])
    response = held_back.get("/admin/", HTTP_AUTHORIZATION=f"Bearer {secret}")
    assert response["Location"] == change_page_with_next("/admin/")


# --- pages ------------------------------------------------------------------------------


def test_a_page_asked_for_json_answers_json(held_back):
    response = held_back.get("/admin/envelopes/approvalrequest/live/", HTTP_ACCEPT="application/json")
    assert response.status_code == 403
    assert response.json() == HELD_BACK


def test_a_browser_opening_an_api_page_is_redirected(held_back):
    response = held_back.get("/api/docs/", HTTP_ACCEPT="text/html,application/xhtml+xml,*/*;q=0.8")
    assert response["Location"] == change_page_with_next("/api/docs/")


def test_next_keeps_the_query_string(held_back):
    response = held_back.get("/admin/envelopes/envelope/?state__exact=escalated&o=1")
    assert response["Location"] == f"{CHANGE_PAGE}?next=/admin/envelopes/envelope/%3Fstate__exact%3Descalated%26o%3D1"


def test_a_form_sent_from_a_page_returns_to_that_page_after_the_change(held_back):
    response = held_back.post("/agents", {"action": "invite"}, HTTP_REFERER="http://testserver/agents?tab=1")
    assert response["Location"] == change_page_with_next("/agents?tab=1")
    elsewhere = held_back.post("/agents", {"action": "invite"}, HTTP_REFERER="https://evil.example/agents")
    assert elsewhere["Location"] == change_page_with_next("/")


def test_after_the_change_the_flag_clears_and_pages_open(held_back, bootstrap_admin):
    assert held_back.get("/agents")["Location"] == change_page_with_next("/agents")
    response = held_back.post(
        CHANGE_PAGE,
        {"oldpassword": PASSWORD, "password1": NEW_PASSWORD, "password2": NEW_PASSWORD, "next": "/agents"},
    )
    assert response.status_code == 302
    assert response["Location"] == "/agents"
    assert Person.objects.get(pk=bootstrap_admin.pk).must_change_password is False

    assert held_back.get("/admin/").status_code == 200
    assert held_back.get("/agents").status_code == 200
    assert held_back.get("/admin/envelopes/approvalrequest/").status_code == 200
    assert held_back.get("/")["Location"] == "/admin/"
    assert held_back.get("/v1/envelopes").status_code == 200


def test_people_without_a_pending_change_are_not_redirected(client, organization):
    person = create_person(organization, "maria", password=PASSWORD, roles=[Role.PLATFORM_ADMIN])
    client.force_login(person)
    assert client.get("/admin/").status_code == 200
    assert client.get("/agents").status_code == 200
