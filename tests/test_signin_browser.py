"""Signing in, the forced password change and the site's front door, in a real browser."""

import os
import re

import pytest

from governance.choices import Role
from governance.models import Person
from governance.services.people import create_person, ensure_organization
from tests.browser import page  # noqa: F401  (fixture)

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

PASSWORD = "a-Long-enough-passw0rd"
NEW_PASSWORD = "a-much-Better-passw0rd"
SIGNIN_SCREENSHOT = os.environ.get("MANDATE_SIGNIN_SCREENSHOT", "/tmp/signin.png")
CHANGE_SCREENSHOT = os.environ.get("MANDATE_PASSWORD_CHANGE_SCREENSHOT", "/tmp/password_change.png")
HEADER_BACKGROUND = "rgb(20, 38, 61)"  # --header-bg in static/mandate/admin.css


@pytest.fixture
def acme():
    return ensure_organization("acme", "Acme")


def sign_in(tab, username: str, password: str = PASSWORD) -> None:
    tab.fill("input[name=login]", username)
    tab.fill("input[name=password]", password)
    tab.click("button[type=submit]")


def header_background(tab) -> str:
    return tab.locator("#header").evaluate("element => getComputedStyle(element).backgroundColor")


def test_sign_in_page_is_styled_like_the_console_without_a_sign_up_link(page):  # noqa: F811
    page.set_viewport_size({"width": 1280, "height": 800})
    page.goto("/accounts/login/")
    assert page.title() == "Sign in | Mandate"
    assert page.locator("#site-name").inner_text().strip() == "Mandate"
    assert header_background(page) == HEADER_BACKGROUND  # the console's stylesheets loaded
    box = page.locator("#container").bounding_box()
    assert box["width"] < 600  # the console's sign-in box, not a full-width browser form
    submit = page.locator("#login-form button[type=submit]")
    assert submit.evaluate("element => getComputedStyle(element).backgroundColor") != "rgba(0, 0, 0, 0)"
    assert page.get_by_label("Username").is_visible() and page.get_by_label("Password").is_visible()
    assert page.get_by_role("link", name=re.compile(r"sign[\s-]?up|register", re.IGNORECASE)).count() == 0
    assert page.locator("a[href*='signup']").count() == 0
    page.screenshot(path=SIGNIN_SCREENSHOT)


def test_forced_password_change_says_why_and_then_opens_the_page_asked_for(page, acme):  # noqa: F811
    create_person(acme, "boot", password=PASSWORD, roles=[Role.PLATFORM_ADMIN], must_change_password=True)
    page.set_viewport_size({"width": 1280, "height": 800})

    page.goto("/agents")
    page.wait_for_url("**/accounts/login/**")
    sign_in(page, "boot")
    page.wait_for_url("**/accounts/password/change/?next=/agents")
    reason = page.locator("#password-change-reason")
    assert "created with a temporary password; choose your own to continue" in reason.inner_text()
    assert header_background(page) == HEADER_BACKGROUND
    page.screenshot(path=CHANGE_SCREENSHOT)

    page.goto("/admin/envelopes/approvalrequest/")  # nowhere else opens first
    page.wait_for_url("**/accounts/password/change/?next=/admin/envelopes/approvalrequest/")
    page.goto("/accounts/password/change/?next=/agents")

    page.fill("input[name=oldpassword]", PASSWORD)
    page.fill("input[name=password1]", NEW_PASSWORD)
    page.fill("input[name=password2]", NEW_PASSWORD)
    page.click("#password-change-form button[type=submit]")
    page.wait_for_url("**/agents")
    assert page.get_by_role("heading", name="Agents", exact=True).is_visible()
    assert Person.objects.get(username="boot").must_change_password is False
    page.goto("/admin/")
    assert page.url.endswith("/admin/")


def test_front_door_leads_visitors_to_sign_in_and_people_to_the_inbox(page, acme):  # noqa: F811
    create_person(acme, "maria", password=PASSWORD, roles=[Role.GOVERNANCE_REVIEWER])
    page.goto("/")
    page.wait_for_url("**/accounts/login/")
    sign_in(page, "maria")
    page.wait_for_url("**/admin/")
    page.goto("/")
    page.wait_for_url("**/admin/")
    assert page.title().startswith("Inbox")


def test_favicon_is_linked_and_served(page):  # noqa: F811
    page.goto("/accounts/login/")
    icons = page.locator("link[rel=icon]")
    assert icons.count() == 2
    for index in range(icons.count()):
        href = icons.nth(index).get_attribute("href")
        answer = page.request.get(href)
        assert answer.ok, href
        assert answer.headers["content-type"] in ("image/x-icon", "image/vnd.microsoft.icon", "image/svg+xml")
    root = page.request.get("/favicon.ico")
    assert root.ok and root.headers["content-type"] == "image/x-icon"
    assert root.body()[:4] == b"\x00\x00\x01\x00"
    # The browser can decode it: drawn on a canvas, its centre is the white M on navy.
    drawn = page.evaluate(
        """async () => {
            const image = new Image();
            image.src = "/favicon.ico";
            await image.decode();
            const canvas = document.createElement("canvas");
            canvas.width = canvas.height = 32;
            const context = canvas.getContext("2d");
            context.drawImage(image, 0, 0, 32, 32);
            return [Array.from(context.getImageData(2, 16, 1, 1).data), image.naturalWidth];
        }"""
    )
    (red, green, blue, alpha), width = drawn
    assert width > 0 and alpha == 255 and (red, green, blue) == (20, 38, 61)
