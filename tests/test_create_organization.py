"""``manage.py create_organization``: a second tenant and its first admin without the Django shell."""

import re

import pytest
from django.core.management import CommandError, call_command
from rest_framework.test import APIClient

from evidence.models import AdminAuditRecord
from governance.choices import Role
from governance.models import Organization, Person
from governance.services.people import ensure_organization, person_roles

pytestmark = pytest.mark.django_db


def create(*args, **options) -> str:
    from io import StringIO

    out = StringIO()
    call_command("create_organization", *args, stdout=out, **options)
    return out.getvalue()


def test_create_organization_makes_the_tenant_and_its_first_admin_who_must_change_the_password():
    out = create("globex", "Globex Corp", admin="hank", email="hank@globex.example")

    organization = Organization.objects.get(slug="globex")
    assert organization.name == "Globex Corp"
    hank = Person.objects.get(username="hank")
    assert (hank.organization, hank.email, hank.must_change_password) == (organization, "hank@globex.example", True)
    assert not hank.is_superuser and hank.is_staff
    assert {Role.PLATFORM_ADMIN, Role.GOVERNANCE_APPROVER, Role.GOVERNANCE_REVIEWER} <= set(person_roles(hank))
    [password] = re.findall(r"password '([^']+)' \(shown once\)", out)
    assert hank.check_password(password)
    assert out.count(password) == 1

    login = APIClient().post("/auth/login", {"username": "hank", "password": password}, format="json")
    assert login.status_code == 200
    assert login.json()["user"]["must_change_password"] is True

    [record] = AdminAuditRecord.objects.filter(action="organization.created")
    assert record.organization_id == organization.pk
    assert password not in str(record.details)


def test_an_existing_slug_or_username_is_refused_and_nothing_is_created():
    ensure_organization("globex", "Globex")
    with pytest.raises(CommandError, match="already exists"):
        create("globex", "Globex again", admin="hank")
    create("initech", "Initech", admin="bill")
    with pytest.raises(CommandError, match="taken"):
        create("umbrella", "Umbrella", admin="bill")
    assert not Organization.objects.filter(slug="umbrella").exists()
    assert not Person.objects.filter(username="hank").exists()


def test_a_slug_that_is_not_a_slug_is_refused():
    with pytest.raises(CommandError, match="slug"):
        create("not a slug", "Nope", admin="someone")
    assert not Person.objects.filter(username="someone").exists()
