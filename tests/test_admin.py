import hashlib
import re

import pytest
from django.contrib.staticfiles import finders
from django.core.management import call_command

from evidence.services import keys
from governance.choices import Role
from governance.models import ApiToken, Organization, Person, RuntimePackage

pytestmark = pytest.mark.django_db


@pytest.fixture
def superuser(organization):
    return Person.objects.create_superuser("root", "root@example.com", "pw", organization=organization)


def test_admin_index_is_branded_mandate(client, superuser):
    client.force_login(superuser)
    html = client.get("/admin/").content.decode()
    assert "Mandate" in html
    assert "mandate/admin.css" in html
    for section in ("People", "Teams", "Organizations", "API tokens", "Signing keys"):
        assert section in html


def test_anonymous_admin_goes_to_the_allauth_login(client):
    response = client.get("/admin/")
    assert response.status_code == 302
    assert response["Location"].startswith("/admin/login/")
    response = client.get(response["Location"])
    assert response.status_code == 302 and response["Location"].startswith("/accounts/login/")


def test_signed_in_person_without_staff_access_is_told_so(client, make_person):
    person = make_person(staff=False)
    client.force_login(person)
    response = client.get("/admin/login/")
    assert response.status_code == 403
    assert "not enabled for" in response.content.decode()


def test_creating_a_token_in_the_admin_shows_the_secret_once(client, superuser, make_person):
    client.force_login(superuser)
    agent = make_person()
    response = client.post(
        "/admin/governance/apitoken/add/",
        {"name": "ci", "principal": str(agent.pk), "roles": ["platform.viewer", "platform.operator"]},
    )
    assert response.status_code == 200
    html = response.content.decode()
    token = ApiToken.objects.get(name="ci")
    assert token.roles == ["platform.operator", "platform.viewer"]
    secret = html.split('id="token-secret"', 1)[1].split(">", 1)[1].split("<", 1)[0]
    assert secret.startswith(f"mdt_{token.prefix}_")
    # The secret works once copied, and is nowhere to be seen again.
    api = client.__class__()
    assert api.get("/v1/audit/verify", HTTP_AUTHORIZATION=f"Bearer {secret}").status_code == 200
    change = client.get(f"/admin/governance/apitoken/{token.pk}/change/").content.decode()
    assert secret not in change and token.secret_hash not in change


def test_signing_key_admin_shows_public_parts_only(client, superuser):
    signature = keys.sign("EdDSA", b"x")
    client.force_login(superuser)
    from evidence.models import SigningKey

    key = SigningKey.objects.get(kid=signature.kid)
    html = client.get(f"/admin/evidence/signingkey/{key.pk}/change/").content.decode()
    assert key.kid in html and key.public_jwk["x"] in html
    assert key.private_key_encrypted not in html
    assert client.get("/admin/evidence/signingkey/add/").status_code == 403


def test_bootstrap_demo_is_idempotent_and_prints_secrets_once(capsys):
    call_command("bootstrap_demo")
    first = capsys.readouterr().out
    assert "password '" in first and "demo API token (shown once): mdt_" in first
    call_command("bootstrap_demo")
    second = capsys.readouterr().out
    assert "mdt_" not in second and "password '" not in second
    admin = Person.objects.get(username="admin")
    assert admin.must_change_password and admin.is_superuser
    assert Role.PLATFORM_ADMIN in admin.role_names
    assert Person.objects.get(username="bob").manager.username == "alice"
    assert ApiToken.objects.filter(principal=admin, name="demo").count() == 1
    # the governed runtime's demo root and one signed package per platform, made once
    assert Organization.objects.get(slug="demo").org_root_id == "org.demo.root"
    packages = RuntimePackage.objects.order_by("platform")
    assert [p.platform for p in packages] == ["linux", "macos", "windows"]
    with open(finders.find("mandate/runtime/demo-runtime-1.0.0.txt"), "rb") as artifact:
        assert {p.package_hash for p in packages} == {"sha256:" + hashlib.sha256(artifact.read()).hexdigest()}


def test_create_api_token_command_prints_a_working_secret(capsys, make_person, client):
    person = make_person(username="svc")
    call_command("create_api_token", "svc", "--name", "svc", "--role", "viewer")
    secret = capsys.readouterr().out.strip()
    token = ApiToken.objects.get(principal=person)
    assert token.roles == ["platform.viewer"]
    assert client.get("/v1/audit/verify", HTTP_AUTHORIZATION=f"Bearer {secret}").status_code == 403


def test_bootstrap_demo_has_a_second_approver_and_a_manager_who_sign_in(capsys, client):
    call_command("bootstrap_demo")
    out = capsys.readouterr().out
    passwords = dict(re.findall(r"user '(\w+)'\s+password '([^']+)'", out))
    assert set(passwords) == {"admin", "alice", "morgan"}
    admin, alice, morgan = (Person.objects.get(username=u) for u in ("admin", "alice", "morgan"))
    assert admin.manager == morgan and alice.manager == morgan
    for person in (alice, morgan):
        assert person.must_change_password and not person.is_superuser
        assert Role.GOVERNANCE_APPROVER in person.role_names
        assert client.login(username=person.username, password=passwords[person.username])
        client.logout()
    call_command("bootstrap_demo")
    assert "password '" not in capsys.readouterr().out
