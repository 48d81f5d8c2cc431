"""GBX's entitlement API through HTTP: the call order, every status code, the seal bundle,
verification and one-time redemption, and the evidence each step leaves."""

import io
import zipfile

import pytest
from rest_framework.test import APIClient

from entitlements.models import Entitlement, Run, SealRedemption
from entitlements.services.issuers import revoke_issuance_token
from evidence.models import AuditEvent
from evidence.seals import verify_seal
from evidence.services.verification import verify_ledger
from tests.gbx import later, sha

pytestmark = pytest.mark.django_db


def error_of(answer) -> tuple[int, str]:
    body = answer.json()
    assert set(body) >= {"error", "message"}, body
    return answer.status_code, body["error"]


# --- issuing -------------------------------------------------------------------------------


def test_issue_answers_201_with_the_balance(gbx):
    customer = gbx.make_customer()
    answer = gbx.issue(customer, runs=3, expires_at="2031-01-01T00:00:00Z")
    assert answer.status_code == 201, answer.content
    body = answer.json()
    assert body["entitlement_id"].startswith("ent_")
    assert {k: body[k] for k in ("principal", "plan_id", "runs_total", "runs_remaining", "expires_at", "status")} == {
        "principal": customer.email,
        "plan_id": "gbx_standard",
        "runs_total": 3,
        "runs_remaining": 3,
        "expires_at": "2031-01-01T00:00:00Z",
        "status": "active",
    }


def test_issuing_again_to_the_same_principal_and_plan_adds_runs_and_keeps_the_later_expiry(gbx):
    customer = gbx.make_customer()
    first = gbx.issue(customer, runs=2, expires_at="2031-01-01T00:00:00Z").json()
    second = gbx.issue(customer, runs=5, expires_at="2030-06-01T00:00:00Z").json()
    assert second["entitlement_id"] == first["entitlement_id"]
    assert (second["runs_total"], second["runs_remaining"], second["expires_at"]) == (7, 7, "2031-01-01T00:00:00Z")
    other_plan = gbx.issue(customer, runs=1, plan_id="gbx_pro").json()
    assert other_plan["entitlement_id"] != first["entitlement_id"]


def test_issue_without_the_admin_token_is_401_and_with_a_wrong_one_403(gbx):
    customer = gbx.make_customer()
    body = {"principal": customer.email, "plan_id": "gbx_standard", "runs_total": 1, "expires_at": later()}
    missing = customer.client.post("/api/entitlement/issue", body, format="json")
    assert error_of(missing) == (401, "missing_admin_token")
    wrong = customer.client.post("/api/entitlement/issue", body, format="json", HTTP_X_GBX_ADMIN_TOKEN="gbx_nope_x")
    assert error_of(wrong) == (403, "invalid_admin_token")
    assert Entitlement.objects.count() == 0


def test_a_revoked_issuance_token_is_403(gbx):
    from entitlements.models import IssuanceToken

    revoke_issuance_token(IssuanceToken.objects.get())
    assert error_of(gbx.issue(gbx.make_customer())) == (403, "invalid_admin_token")


def test_the_configured_admin_token_issues_in_the_default_organization(gbx, settings):
    from governance.secret_hashing import hash_secret

    settings.MANDATE_GBX_ADMIN_TOKEN_SHA256 = hash_secret("partner-secret-from-settings")
    customer = gbx.make_customer()
    answer = customer.client.post(
        "/api/entitlement/issue",
        {"principal": "someone@example.com", "plan_id": "gbx_standard", "runs_total": 1, "expires_at": later()},
        format="json",
        HTTP_X_GBX_ADMIN_TOKEN="partner-secret-from-settings",
    )
    assert answer.status_code == 201, answer.content
    assert Entitlement.objects.get().organization.slug == settings.MANDATE_DEFAULT_ORGANIZATION


def test_issue_needs_a_caller_too(gbx):
    answer = APIClient().post(
        "/api/entitlement/issue",
        {"principal": "a@example.com", "plan_id": "gbx_standard", "runs_total": 1, "expires_at": later()},
        format="json",
        HTTP_X_GBX_ADMIN_TOKEN=gbx.issuer_secret,
    )
    assert error_of(answer) == (401, "unauthenticated")


@pytest.mark.parametrize(
    "change, field",
    [
        ({"runs_total": 0}, "runs_total"),
        ({"runs_total": "3"}, "runs_total"),
        ({"runs_total": True}, "runs_total"),
        ({"expires_at": "2020-01-01T00:00:00Z"}, "expires_at"),
        ({"expires_at": "next week"}, "expires_at"),
        ({"plan_id": "no spaces"}, "plan_id"),
        ({"principal": ""}, "principal"),
        ({"principal": "a\nb@example.com"}, "principal"),
        ({"surprise": 1}, "surprise"),
    ],
)
def test_a_bad_issue_body_is_400_naming_the_field(gbx, change, field):
    customer = gbx.make_customer()
    body = {"principal": customer.email, "plan_id": "gbx_standard", "runs_total": 1, "expires_at": later(), **change}
    answer = customer.client.post(
        "/api/entitlement/issue", body, format="json", HTTP_X_GBX_ADMIN_TOKEN=gbx.issuer_secret
    )
    assert error_of(answer) == (400, "invalid_request")
    assert field in answer.json()["message"]
    assert Entitlement.objects.count() == 0


# --- the call order ------------------------------------------------------------------------


def test_the_full_call_order_returns_a_seal_bundle_that_verifies(gbx):
    customer = gbx.make_customer()
    entitlement_id = gbx.issue(customer, runs=2).json()["entitlement_id"]
    check = customer.post("check", {"run_id": "run-1"})
    assert check.status_code == 200
    assert check.json()["allowed"] is True and check.json()["runs_remaining"] == 2
    consume = customer.post("consume", {"run_id": "run-1"})
    assert consume.json() == {"entitlement_id": entitlement_id, "run_id": "run-1", "runs_remaining": 1}
    start = customer.post(
        "run_start",
        {
            "run_id": "run-1",
            "inputs_sha256": "sha256:" + sha("in").upper(),
            "container_image": "img:1",
            "project_id": "p",
        },
    )
    assert start.status_code == 200 and start.json()["state"] == "started"
    complete = customer.post(
        "run_complete", {"run_id": "run-1", "outputs_sha256": sha("out"), "run_manifest_sha256": sha("manifest")}
    )
    assert complete.status_code == 200, complete.content
    bundle = complete.json()
    assert set(bundle) == {"seal_id", "seal_json", "seal_sig", "seal_svg", "public_key_pem", "verify_md"}
    sealed = bundle["seal_json"]
    assert sealed["seal_id"] == bundle["seal_id"]
    assert (sealed["principal"], sealed["entitlement_id"], sealed["run_id"]) == (
        customer.email,
        entitlement_id,
        "run-1",
    )
    assert (sealed["inputs_sha256"], sealed["outputs_sha256"]) == (sha("in"), sha("out"))
    assert (sealed["container_image"], sealed["project_id"]) == ("img:1", "p")
    assert verify_seal(bundle["seal_svg"]).status == "VERIFIED"
    run = Run.objects.get(run_id="run-1")
    assert (run.state, run.seal_id) == ("completed", bundle["seal_id"])


def test_each_step_is_in_the_runs_evidence_chain_and_the_ledger_verifies(gbx):
    customer = gbx.make_customer()
    gbx.issue(customer)
    customer.run("run-ev")
    run = Run.objects.get(run_id="run-ev")
    steps = list(
        AuditEvent.objects.filter(chain_id=run.chain_id).order_by("sequence_no").values_list("event_type", flat=True)
    )
    assert steps == ["GBX_RUN_CHECKED", "GBX_RUN_CONSUMED", "GBX_RUN_STARTED", "GBX_RUN_COMPLETED"]
    completed = AuditEvent.objects.get(chain_id=run.chain_id, event_type="GBX_RUN_COMPLETED")
    assert completed.payload["seal_id"] == run.seal_id
    assert verify_ledger().valid


def test_the_seal_zip_holds_the_bundle_as_files(gbx):
    customer = gbx.make_customer()
    gbx.issue(customer)
    bundle = customer.run("run-zip").json()
    answer = customer.client.get("/api/entitlement/runs/run-zip/seal.zip")
    assert answer.status_code == 200 and answer["Content-Type"] == "application/zip"
    files = zipfile.ZipFile(io.BytesIO(answer.content))
    assert sorted(files.namelist()) == ["VERIFY.md", "public_key.pem", "seal.json", "seal.sig", "seal.svg"]
    assert files.read("seal.svg").decode() == bundle["seal_svg"]
    assert files.read("public_key.pem").decode() == bundle["public_key_pem"]


def test_the_seal_zip_of_an_unsealed_or_someone_elses_run_is_404(gbx):
    customer, other = gbx.make_customer(), gbx.make_customer()
    gbx.issue(customer)
    customer.run("run-own")
    customer.run("run-open", complete=False)
    assert error_of(customer.client.get("/api/entitlement/runs/run-open/seal.zip")) == (404, "run_not_found")
    assert error_of(other.client.get("/api/entitlement/runs/run-own/seal.zip")) == (404, "run_not_found")


@pytest.mark.parametrize("path", ["check", "consume"])
def test_without_an_entitlement_check_and_consume_are_402(gbx, path):
    assert error_of(gbx.make_customer().post(path, {"run_id": "r1"})) == (402, "no_entitlement")


def test_when_the_runs_are_used_up_check_and_consume_are_402(gbx):
    customer = gbx.make_customer()
    gbx.issue(customer, runs=1)
    assert customer.post("consume", {"run_id": "r1"}).json()["runs_remaining"] == 0
    assert error_of(customer.post("check", {"run_id": "r2"})) == (402, "entitlement_exhausted")
    assert error_of(customer.post("consume", {"run_id": "r2"})) == (402, "entitlement_exhausted")
    assert Run.objects.count() == 1


def test_an_expired_entitlement_is_402_expired(gbx):
    customer = gbx.make_customer()
    gbx.issue(customer, runs=2)
    Entitlement.objects.update(expires_at="2020-01-01T00:00:00Z")
    assert error_of(customer.post("check", {"run_id": "r1"})) == (402, "entitlement_expired")
    assert error_of(customer.post("consume", {"run_id": "r1"})) == (402, "entitlement_expired")


def test_a_run_id_is_consumed_once_then_409_on_check_and_consume(gbx):
    customer = gbx.make_customer()
    gbx.issue(customer, runs=3)
    assert customer.post("consume", {"run_id": "r1"}).status_code == 200
    assert error_of(customer.post("consume", {"run_id": "r1"})) == (409, "run_id_already_consumed")
    assert error_of(customer.post("check", {"run_id": "r1"})) == (409, "run_id_already_consumed")
    assert Entitlement.objects.get().runs_remaining == 2


def test_one_customers_run_id_is_not_anothers(gbx):
    first, second = gbx.make_customer(), gbx.make_customer()
    gbx.issue(first)
    gbx.issue(second)
    assert first.post("consume", {"run_id": "shared"}).status_code == 200
    assert second.post("consume", {"run_id": "shared"}).status_code == 200


def test_run_start_before_consume_is_422_and_twice_409(gbx):
    customer = gbx.make_customer()
    gbx.issue(customer)
    body = {"run_id": "r1", "inputs_sha256": sha("i"), "container_image": "img", "project_id": "p"}
    assert error_of(customer.post("run_start", body)) == (422, "consume_required")
    customer.post("consume", {"run_id": "r1"})
    assert customer.post("run_start", body).status_code == 200
    assert error_of(customer.post("run_start", body)) == (409, "run_already_started")


def test_run_complete_out_of_order_is_422_and_twice_409(gbx):
    customer = gbx.make_customer()
    gbx.issue(customer)
    body = {"run_id": "r1", "outputs_sha256": sha("o"), "run_manifest_sha256": sha("m")}
    assert error_of(customer.post("run_complete", body)) == (422, "consume_required")
    customer.post("consume", {"run_id": "r1"})
    assert error_of(customer.post("run_complete", body)) == (422, "run_start_required")
    customer.post("run_start", {"run_id": "r1", "inputs_sha256": sha("i"), "container_image": "img", "project_id": "p"})
    assert customer.post("run_complete", body).status_code == 200
    assert error_of(customer.post("run_complete", body)) == (409, "run_already_completed")
    assert Run.objects.get().seal_id


@pytest.mark.parametrize(
    "path, body",
    [
        ("check", ["run_id"]),
        ("check", {}),
        ("check", {"run_id": ""}),
        ("check", {"run_id": "bad id"}),
        ("check", {"run_id": 7}),
        ("consume", {"run_id": "r", "extra": 1}),
        ("run_start", {"run_id": "r", "inputs_sha256": "abc", "container_image": "i", "project_id": "p"}),
        ("run_start", {"run_id": "r", "inputs_sha256": "z" * 64, "container_image": "i", "project_id": "p"}),
        ("run_start", {"run_id": "r", "inputs_sha256": "a" * 64, "container_image": "", "project_id": "p"}),
        ("run_complete", {"run_id": "r", "outputs_sha256": "a" * 64}),
    ],
)
def test_malformed_bodies_are_400(gbx, path, body):
    customer = gbx.make_customer()
    gbx.issue(customer)
    assert error_of(customer.post(path, body)) == (400, "invalid_request")


def test_a_body_that_is_not_json_is_400(gbx):
    customer = gbx.make_customer()
    answer = customer.client.post("/api/entitlement/check", b"{nope", content_type="application/json")
    assert error_of(answer) == (400, "invalid_request")


def test_without_a_credential_every_endpoint_is_401(gbx):
    anonymous = APIClient()
    for path in ("check", "consume", "run_start", "run_complete", "redeem_seal_once"):
        assert error_of(anonymous.post(f"/api/entitlement/{path}", {}, format="json"))[0] == 401
    assert error_of(anonymous.post("/api/seal/verify", {}, format="json"))[0] == 401


def test_a_bad_mandate_token_is_401(gbx):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION="Bearer mdt_not_a_real_token")
    assert client.post("/api/entitlement/check", {"run_id": "r"}, format="json").status_code == 401


# --- verification and redemption -----------------------------------------------------------


def test_verify_accepts_multipart_and_an_svg_body(gbx):
    customer = gbx.make_customer()
    gbx.issue(customer)
    svg = customer.run("r-verify").json()["seal_svg"]
    as_file = customer.client.post("/api/seal/verify", {"seal": io.BytesIO(svg.encode())}, format="multipart")
    as_body = customer.client.post("/api/seal/verify", svg.encode(), content_type="image/svg+xml")
    for answer in (as_file, as_body):
        assert answer.status_code == 200, answer.content
        body = answer.json()
        assert (body["status"], body["valid"]) == ("VERIFIED", True)
        assert set(body) >= {"status", "valid", "seal_id", "payload", "kid", "checks"}
        assert set(body["checks"]) >= {"signature", "ring", "barcode", "key_known"}


def test_a_tampered_seal_verifies_as_invalid(gbx):
    customer = gbx.make_customer()
    gbx.issue(customer)
    bundle = customer.run("r-tamper").json()
    tampered = bundle["seal_svg"].replace(bundle["seal_json"]["outputs_sha256"], sha("forged"))
    answer = customer.client.post("/api/seal/verify", tampered.encode(), content_type="image/svg+xml")
    assert answer.status_code == 200
    assert (answer.json()["status"], answer.json()["valid"]) == ("INVALID", False)


@pytest.mark.parametrize(
    "svg",
    [
        b"not xml at all",
        b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">]><svg>&lol;</svg>',
        b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]><svg>&e;</svg>',
        b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>',
        b"<svg>" + b"x" * (1024 * 1024 + 10) + b"</svg>",
    ],
)
def test_hostile_or_malformed_seals_are_400(gbx, svg):
    customer = gbx.make_customer()
    answer = customer.client.post("/api/seal/verify", svg, content_type="image/svg+xml")
    assert answer.status_code == 400
    assert answer.json()["error"] in ("seal_unreadable", "invalid_request")


def test_verify_without_a_seal_is_400(gbx):
    customer = gbx.make_customer()
    assert error_of(customer.client.post("/api/seal/verify", {}, format="json")) == (400, "invalid_request")


def test_a_verified_seal_is_redeemed_once_per_principal(gbx):
    customer, friend = gbx.make_customer(), gbx.make_customer()
    gbx.issue(customer, runs=1)
    svg = customer.run("r-redeem").json()["seal_svg"]
    first = customer.client.post("/api/entitlement/redeem_seal_once", svg.encode(), content_type="image/svg+xml")
    assert first.status_code == 200, first.content
    seal_id = Run.objects.get(run_id="r-redeem").seal_id
    assert first.json() == {
        "entitlement_id": Entitlement.objects.get(principal=customer.email).entitlement_id,
        "runs_remaining": 1,
        "seal_id": seal_id,
    }
    again = customer.client.post("/api/entitlement/redeem_seal_once", {"seal": io.BytesIO(svg.encode())})
    assert error_of(again) == (409, "seal_already_redeemed")
    # Another principal may redeem it once too: the rerun goes to their own balance.
    theirs = friend.client.post("/api/entitlement/redeem_seal_once", svg.encode(), content_type="image/svg+xml")
    assert theirs.status_code == 200 and theirs.json()["runs_remaining"] == 1
    assert SealRedemption.objects.count() == 2
    assert friend.post("consume", {"run_id": "rerun-1"}).status_code == 200
    assert verify_ledger().valid


def test_redeeming_a_seal_that_does_not_verify_is_400_with_the_failed_checks(gbx):
    customer = gbx.make_customer()
    gbx.issue(customer)
    bundle = customer.run("r-bad").json()
    tampered = bundle["seal_svg"].replace(bundle["seal_json"]["project_id"], "proj-forged")
    answer = customer.client.post("/api/entitlement/redeem_seal_once", tampered.encode(), content_type="image/svg+xml")
    assert error_of(answer) == (400, "seal_invalid")
    assert answer.json()["status"] == "INVALID" and False in answer.json()["checks"].values()
    assert SealRedemption.objects.count() == 0


# --- agents ----------------------------------------------------------------------------------


def test_an_agents_channel_key_holds_and_consumes_as_the_agent(gbx, demo, make_person):
    from envelopes.requests.channels import create_invite, register_channel

    owner = make_person(username="owner")
    _, invite = create_invite(owner)
    _channel, key, _ = register_channel(invite, name="nightly bot", agent_id="agent-payments-prod")
    partner = gbx.make_customer()
    issued = partner.client.post(
        "/api/entitlement/issue",
        {"principal": "agent-payments-prod", "plan_id": "gbx_standard", "runs_total": 1, "expires_at": later()},
        format="json",
        HTTP_X_GBX_ADMIN_TOKEN=gbx.issuer_secret,
    )
    assert issued.status_code == 201
    agent = APIClient()
    agent.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    answer = agent.post("/api/entitlement/consume", {"run_id": "nightly-1"}, format="json")
    assert answer.status_code == 200, answer.content
    run = Run.objects.get(run_id="nightly-1")
    assert run.principal == "agent-payments-prod"
    consumed = AuditEvent.objects.get(chain_id=run.chain_id, event_type="GBX_RUN_CONSUMED")
    assert (consumed.performer_type, consumed.performer_id) == ("agent", "agent-payments-prod")
