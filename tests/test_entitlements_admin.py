"""The console's entitlement pages: balances, "Issue runs" for operators and admins only, a
run's timeline with its seal, redemptions, and issuance tokens shown once."""

import re

import pytest

from entitlements.models import Entitlement, IssuanceToken, Run
from governance.choices import Role

pytestmark = pytest.mark.django_db


@pytest.fixture
def operator(make_person):
    return make_person(roles=[Role.PLATFORM_OPERATOR], username="ops")


@pytest.fixture
def viewer(make_person):
    return make_person(roles=[Role.PLATFORM_VIEWER], username="watcher")


def test_an_operator_issues_runs_from_the_console_and_sees_the_balance(client, operator):
    client.force_login(operator)
    listing = client.get("/admin/entitlements/entitlement/")
    assert listing.status_code == 200 and "Issue runs" in listing.content.decode()
    answer = client.post(
        "/admin/entitlements/entitlement/issue/",
        {"principal": "Job@Example.com", "plan_id": "gbx_standard", "runs_total": 4, "expires_at": "2031-05-01 12:00"},
    )
    assert answer.status_code == 302, answer.content.decode()
    entitlement = Entitlement.objects.get()
    assert (entitlement.principal, entitlement.runs_remaining, entitlement.issued_by) == ("job@example.com", 4, "ops")
    listing = client.get("/admin/entitlements/entitlement/").content.decode()
    assert "4 of 4" in listing and "job@example.com" in listing


def test_a_bad_issue_in_the_console_says_why_and_issues_nothing(client, operator):
    client.force_login(operator)
    answer = client.post(
        "/admin/entitlements/entitlement/issue/",
        {"principal": "a@example.com", "plan_id": "gbx_standard", "runs_total": 2, "expires_at": "2020-01-01 00:00"},
    )
    assert answer.status_code == 200
    assert "must be in the future" in answer.content.decode()
    assert Entitlement.objects.count() == 0


def test_a_viewer_sees_balances_but_cannot_issue(client, viewer):
    client.force_login(viewer)
    listing = client.get("/admin/entitlements/entitlement/")
    assert listing.status_code == 200 and "Issue runs" not in listing.content.decode()
    assert client.get("/admin/entitlements/entitlement/issue/").status_code == 403


def test_the_run_page_shows_its_timeline_and_its_seal(client, operator, gbx):
    customer = gbx.make_customer()
    gbx.issue(customer)
    customer.run("run-page")
    run = Run.objects.get()
    client.force_login(operator)
    page = client.get(f"/admin/entitlements/run/{run.pk}/change/").content.decode()
    timeline = page[page.index('id="run-timeline"') :]
    steps = re.findall(r"GBX_RUN_\w+", timeline)
    assert steps[:4] == ["GBX_RUN_CHECKED", "GBX_RUN_CONSUMED", "GBX_RUN_STARTED", "GBX_RUN_COMPLETED"]
    assert 'id="run-seal"' in page and "data:image/svg+xml" in page
    assert f"/api/entitlement/runs/{run.run_id}/seal.zip" in page


def test_another_organizations_entitlements_are_not_listed(client, operator):
    from governance.services.people import ensure_organization

    other = ensure_organization("other", "Other")
    Entitlement.objects.create(entitlement_id="ent_other", organization=other, principal="x@y.z", plan_id="p")
    client.force_login(operator)
    assert "ent_other" not in client.get("/admin/entitlements/entitlement/").content.decode()


def test_an_issuance_token_made_in_the_console_is_shown_once_and_issues(client, operator, gbx):
    client.force_login(operator)
    created = client.post("/admin/entitlements/issuancetoken/add/", {"name": "billing"}).content.decode()
    secret = re.search(r'id="token-secret"[^>]*>(gbx_[^<]+)<', created).group(1)
    token = IssuanceToken.objects.get(name="billing")
    assert secret not in token.secret_hash and token.secret_hash != secret
    assert secret not in client.get("/admin/entitlements/issuancetoken/").content.decode()
    customer = gbx.make_customer()
    answer = customer.client.post(
        "/api/entitlement/issue",
        {"principal": customer.email, "plan_id": "gbx_standard", "runs_total": 1, "expires_at": "2031-01-01T00:00:00Z"},
        format="json",
        HTTP_X_GBX_ADMIN_TOKEN=secret,
    )
    assert answer.status_code == 201


def test_the_create_issuance_token_command_prints_a_working_token(capsys, gbx):
    from django.core.management import call_command

    call_command("create_issuance_token", "cli partner")
    secret = capsys.readouterr().out.strip().splitlines()[-1]
    assert secret.startswith("gbx_")
    customer = gbx.make_customer()
    answer = customer.client.post(
        "/api/entitlement/issue",
        {"principal": "a@b.example", "plan_id": "gbx_standard", "runs_total": 1, "expires_at": "2031-01-01T00:00:00Z"},
        format="json",
        HTTP_X_GBX_ADMIN_TOKEN=secret,
    )
    assert answer.status_code == 201, answer.content
