import pytest

from governance.choices import Role
from governance.models import Person
from governance.services.people import create_person, ensure_organization
from tests.browser import page  # noqa: F401  (fixture)

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_bootstrap_admin_signs_in_changes_password_and_reaches_the_console(page):  # noqa: F811
    organization = ensure_organization("acme", "Acme")
    create_person(
        organization,
        "boot",
        password="first-Password-1",
        roles=[Role.PLATFORM_ADMIN],
        is_superuser=True,
        must_change_password=True,
    )

    page.goto("/admin/")
    assert "/accounts/login/" in page.url
    page.fill("input[name=login]", "boot")
    page.fill("input[name=password]", "first-Password-1")
    page.click("button[type=submit]")

    page.wait_for_url("**/accounts/password/change/**")
    page.fill("input[name=oldpassword]", "first-Password-1")
    page.fill("input[name=password1]", "a-much-Better-passw0rd")
    page.fill("input[name=password2]", "a-much-Better-passw0rd")
    page.click("button[type=submit]")

    page.goto("/admin/")
    assert page.locator("#site-name").inner_text().strip() == "Mandate"
    assert page.get_by_role("link", name="API tokens").is_visible()
    assert Person.objects.get(username="boot").must_change_password is False
