"""Sign-in and account pages in the console's look, no sign-up, and the site's entry points:
``/``, ``/favicon.ico``, ``/agents/``, the admin's "Change password"."""

import re

import pytest
from django.test import Client

from governance.adapters import MandateAccountAdapter
from governance.choices import Role
from governance.models import Person
from governance.services.people import create_person
from tests.url_walk import url_samples

pytestmark = pytest.mark.django_db

PASSWORD = "a-Long-enough-passw0rd"
CONSOLE_LOOK = (
    "/static/admin/css/base.css",  # Django admin's stylesheet, as on every console page
    "/static/mandate/admin.css",  # Mandate's colours
    '<a href="/admin/" class="mandate-brand">Mandate</a>',  # the header's brand
    '<link rel="icon" href="/static/mandate/favicon.ico"',
    '<link rel="icon" href="/static/mandate/favicon.svg" type="image/svg+xml">',
)
LINKS = re.compile(r"<a\b([^>]*)>(.*?)</a>", re.IGNORECASE | re.DOTALL)
SIGN_UP = re.compile(r"sign[\s_-]?up|register", re.IGNORECASE)


@pytest.fixture
def maria(organization):
    return create_person(organization, "maria", password=PASSWORD, roles=[Role.PLATFORM_ADMIN], email="m@acme.test")


@pytest.fixture
def signed_in(client, maria):
    client.force_login(maria)
    return client


def html_of(response) -> str:
    assert response.status_code == 200, response.status_code
    return response.content.decode()


def assert_console_page_without_sign_up(html: str) -> None:
    for piece in CONSOLE_LOOK:
        assert piece in html
    assert "/accounts/signup/" not in html
    sign_up_links = [link for link in LINKS.findall(html) if SIGN_UP.search(link[0]) or SIGN_UP.search(link[1])]
    assert sign_up_links == []


def allauth_paths() -> list[str]:
    return [sample.path for sample in url_samples() if sample.path.startswith("/accounts/")]


# --- the sign-in pages ------------------------------------------------------------------


def test_sign_in_page_looks_like_the_console_and_offers_no_sign_up(client):
    html = html_of(client.get("/accounts/login/"))
    assert_console_page_without_sign_up(html)
    assert "/static/admin/css/login.css" in html  # the console's sign-in box
    assert "/static/mandate/account.css" in html
    assert "<title>Sign in | Mandate</title>" in html
    assert 'name="login"' in html and 'name="password"' in html


def test_every_allauth_page_is_in_the_console_frame_without_sign_up(client, maria):
    """Whatever allauth page someone reaches, signed in or not, it wears the console's look and
    never offers sign-up; a page that answers something else redirects (it is not a page)."""
    signed_in = Client()
    signed_in.force_login(maria)
    pages = 0
    for path in allauth_paths():
        for browser in (client, signed_in):
            response = browser.get(path)
            if response.status_code not in (301, 302):
                assert response["Content-Type"].startswith("text/html"), (path, response.status_code)
                assert_console_page_without_sign_up(response.content.decode())
                pages += 1
    assert pages >= 10  # login, logout, password change, set and reset pages, sign-up closed...


def test_sign_up_is_closed_and_says_who_creates_accounts(client):
    assert MandateAccountAdapter().is_open_for_signup(request=None) is False
    html = html_of(client.get("/accounts/signup/"))
    assert "Accounts are created by admins" in html
    response = client.post("/accounts/signup/", {"username": "mallory", "password1": PASSWORD, "password2": PASSWORD})
    assert not Person.objects.filter(username="mallory").exists()
    assert response.status_code == 200


def test_wrong_password_is_shown_in_the_console_style(client, maria):
    html = html_of(client.post("/accounts/login/", {"login": "maria", "password": "wrong"}))
    assert '<p class="errornote">' in html
    assert "The username and/or password you specified are not correct." in html


def test_sign_in_leads_to_the_inbox(client, maria):
    response = client.post("/accounts/login/", {"login": "maria", "password": PASSWORD})
    assert response["Location"] == "/admin/"


def test_password_reset_pages_are_styled_and_reset_the_password(client, maria, mailoutbox):
    assert_console_page_without_sign_up(html_of(client.get("/accounts/password/reset/")))
    response = client.post("/accounts/password/reset/", {"email": "m@acme.test"})
    assert response["Location"] == "/accounts/password/reset/done/"
    assert_console_page_without_sign_up(html_of(client.get(response["Location"])))

    link = re.search(r"http://testserver(/accounts/password/reset/key/\S+)", mailoutbox[0].body).group(1)
    form_page = client.get(link, follow=True)
    html = html_of(form_page)
    assert_console_page_without_sign_up(html)
    assert 'name="password1"' in html
    new = "reset-Long-passw0rd"
    done = client.post(form_page.redirect_chain[-1][0], {"password1": new, "password2": new})
    assert done["Location"] == "/accounts/password/reset/key/done/"
    assert_console_page_without_sign_up(html_of(client.get(done["Location"])))
    maria.refresh_from_db()
    assert maria.check_password(new)

    bad_key = html_of(client.get("/accounts/password/reset/key/1-nonsense/"))
    assert_console_page_without_sign_up(bad_key)
    assert "Bad Token" in bad_key


def test_sign_out_page_is_styled_and_signs_out(signed_in):
    html = html_of(signed_in.get("/accounts/logout/"))
    assert_console_page_without_sign_up(html)
    assert "Sign out of Mandate?" in html
    assert signed_in.post("/accounts/logout/").status_code == 302
    assert "_auth_user_id" not in signed_in.session


# --- the password change page -----------------------------------------------------------


def test_forced_password_change_says_why_it_appeared(client, organization):
    boot = create_person(
        organization, "boot", password=PASSWORD, roles=[Role.PLATFORM_ADMIN], must_change_password=True
    )
    client.force_login(boot)
    html = html_of(client.get(client.get("/admin/")["Location"]))
    assert_console_page_without_sign_up(html)
    assert "Your account was created with a temporary password; choose your own to continue." in html
    assert 'name="next" value="/admin/"' in html
    assert "Forgot your password?" not in html  # they just signed in with it
    assert 'class="breadcrumbs"' not in html  # nowhere else to go yet


def test_chosen_password_change_has_no_reason_and_a_way_back(signed_in):
    html = html_of(signed_in.get("/accounts/password/change/"))
    assert_console_page_without_sign_up(html)
    assert "temporary password" not in html
    assert '<div class="breadcrumbs"><a href="/admin/">Inbox</a>' in html
    assert "Signed in as <strong>maria</strong>" in html


def test_the_admins_change_password_link_opens_the_one_password_change_page(signed_in):
    response = signed_in.get("/admin/password_change/")
    assert response.status_code == 302
    assert response["Location"] == "/accounts/password/change/"


def test_a_password_changed_there_is_audited_and_leads_on(signed_in, maria):
    new = "another-Long-passw0rd"
    response = signed_in.post(
        "/accounts/password/change/", {"oldpassword": PASSWORD, "password1": new, "password2": new}
    )
    assert response.status_code == 302
    maria.refresh_from_db()
    assert maria.check_password(new)


# --- entry points -----------------------------------------------------------------------


def test_front_door_sends_visitors_to_sign_in_and_people_to_the_inbox(client, signed_in):
    assert Client().get("/")["Location"] == "/accounts/login/"
    assert signed_in.get("/")["Location"] == "/admin/"


def test_favicon_is_served_at_the_root_and_from_static(client):
    response = client.get("/favicon.ico")
    assert response.status_code == 200
    assert response["Content-Type"] == "image/x-icon"
    assert response.content[:4] == b"\x00\x00\x01\x00"  # an ICO header
    assert "max-age" in response["Cache-Control"]


def test_console_pages_link_the_favicon(signed_in):
    for path in ("/admin/", "/agents", "/admin/envelopes/approvalrequest/", "/admin/controlplane/surface/"):
        html = html_of(signed_in.get(path))
        assert '<link rel="icon" href="/static/mandate/favicon.svg" type="image/svg+xml">' in html, path


def test_agents_page_answers_with_and_without_a_trailing_slash(signed_in):
    without, with_slash = html_of(signed_in.get("/agents")), html_of(signed_in.get("/agents/"))
    assert '<div class="agents" id="agents">' in without
    assert '<div class="agents" id="agents">' in with_slash
