"""A GBX customer job with an OpenID Connect ID token (a local test issuer standing in for
Google): the whole call order, the principal it acts as, and the 401s of bad tokens."""

import pytest
from rest_framework.test import APIClient

from entitlements.models import Entitlement, Run
from governance.services.people import ensure_organization
from tests.gbx import later, sha

pytestmark = pytest.mark.django_db


def job(token: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    return client


def test_a_job_with_an_id_token_runs_the_whole_call_order(gbx, oidc_issuer, settings):
    # The partner issues in its organization; the issuer's callers act in it.
    settings.MANDATE_OIDC_ISSUERS = [{**oidc_issuer.settings_entry(), "organization": gbx.organization.slug}]
    partner = gbx.make_customer()
    issued = partner.client.post(
        "/api/entitlement/issue",
        {"principal": "Runner@Example.com", "plan_id": "gbx_standard", "runs_total": 2, "expires_at": later()},
        format="json",
        HTTP_X_GBX_ADMIN_TOKEN=gbx.issuer_secret,
    )
    assert issued.status_code == 201 and issued.json()["principal"] == "runner@example.com"
    client = job(oidc_issuer.id_token(email="runner@example.com"))
    steps = [
        ("check", {"run_id": "ci-1"}),
        ("consume", {"run_id": "ci-1"}),
        ("run_start", {"run_id": "ci-1", "inputs_sha256": sha("i"), "container_image": "img", "project_id": "p"}),
        ("run_complete", {"run_id": "ci-1", "outputs_sha256": sha("o"), "run_manifest_sha256": sha("m")}),
    ]
    for path, body in steps:
        answer = client.post(f"/api/entitlement/{path}", body, format="json")
        assert answer.status_code == 200, (path, answer.content)
    assert answer.json()["seal_json"]["principal"] == "runner@example.com"
    run = Run.objects.get()
    assert (run.principal, run.state) == ("runner@example.com", "completed")
    assert Entitlement.objects.get().runs_remaining == 1


def test_an_id_token_without_email_acts_as_its_subject(gbx, oidc_issuer):
    client = job(oidc_issuer.id_token(email=None, sub="svc-123"))
    answer = client.post("/api/entitlement/check", {"run_id": "r"}, format="json")
    assert (answer.status_code, answer.json()["error"]) == (402, "no_entitlement")


def test_an_issuers_callers_act_in_the_organization_it_names(gbx, oidc_issuer, settings):
    other = ensure_organization("partner-b", "Partner B")
    settings.MANDATE_OIDC_ISSUERS = [{**oidc_issuer.settings_entry(), "organization": "partner-b"}]
    Entitlement.objects.create(
        entitlement_id="ent_b",
        organization=other,
        principal="runner@example.com",
        plan_id="p",
        runs_total=1,
        runs_remaining=1,
    )
    client = job(oidc_issuer.id_token(email="runner@example.com"))
    answer = client.post("/api/entitlement/consume", {"run_id": "r1"}, format="json")
    assert answer.status_code == 200 and answer.json()["entitlement_id"] == "ent_b"


@pytest.mark.parametrize(
    "make_token, code",
    [
        (lambda issuer: issuer.id_token(exp=1), "token_expired"),
        (lambda issuer: issuer.id_token(aud="someone-else"), "invalid_audience"),
        (lambda issuer: issuer.id_token(iss="https://evil.example"), "untrusted_issuer"),
        (lambda issuer: issuer.id_token() + "x", "invalid_signature"),
    ],
)
def test_a_bad_id_token_is_401_in_gbxs_error_shape(gbx, oidc_issuer, make_token, code):
    answer = job(make_token(oidc_issuer)).post("/api/entitlement/check", {"run_id": "r"}, format="json")
    assert answer.status_code == 401
    assert answer.json()["error"] == code and answer.json()["message"]
    assert answer["WWW-Authenticate"].startswith("Bearer")
