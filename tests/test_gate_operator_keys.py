"""Operator keys: created once by the command, stored hashed, usable only with a DPoP proof
from the bound key pair, accepted wherever platform.operator is."""

import io
import json

import pytest
from cryptography.hazmat.primitives import serialization
from django.core.management import call_command
from django.core.management.base import CommandError
from rest_framework.test import APIClient

from evidence.models import AdminAuditRecord
from governance.errors import GateError
from governance.gate.auth import authenticate_operator
from governance.gate.operator_keys import create_operator_key, revoke_operator_key
from governance.models import GateLease, OperatorKey
from governance.secret_hashing import hash_secret
from tests import gate_client
from tests.gate_client import make_key, operator_headers

pytestmark = pytest.mark.django_db

VERIFY = "/v1/audit/verify"  # LatchGate's operator-only ledger check


@pytest.fixture
def dpop_key():
    return make_key()


@pytest.fixture
def api_key(dpop_key):
    _, secret = create_operator_key("alice", jkt=dpop_key.jkt, created_by="admin")
    return secret


def get(path, headers):
    return APIClient().get(path, **headers)


def create(*args) -> str:
    out = io.StringIO()
    call_command("create_operator_key", *args, stdout=out, stderr=io.StringIO())
    return out.getvalue().strip()


# --- the command -----------------------------------------------------------------------------------


def test_the_command_prints_the_key_once_and_keeps_only_its_hash(tmp_path, dpop_key):
    jwk_file = tmp_path / "alice.jwk"
    jwk_file.write_text(json.dumps(dpop_key.jwk))
    secret = create("alice", "--jwk-file", str(jwk_file))
    assert secret.startswith("mdo_")
    key = OperatorKey.objects.get(name="alice")
    assert key.jkt == dpop_key.jkt and key.key_hash == hash_secret(secret)
    assert secret not in json.dumps(list(OperatorKey.objects.values()), default=str)
    assert AdminAuditRecord.objects.filter(action="gate.operator_key_created", target_id=str(key.pk)).exists()
    assert get(VERIFY, operator_headers(dpop_key, secret, "GET", VERIFY)).status_code == 200


def test_the_command_reads_a_pem_key_as_latchgate_init_writes_it(tmp_path, dpop_key):
    pem = tmp_path / "ops.pem"
    pem.write_bytes(
        dpop_key.private.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    create("ops", "--jwk-file", str(pem))
    assert OperatorKey.objects.get(name="ops").jkt == dpop_key.jkt


def test_the_command_takes_a_thumbprint(dpop_key):
    create("bob", "--jkt", dpop_key.jkt)
    assert OperatorKey.objects.get(name="bob").jkt == dpop_key.jkt


@pytest.mark.parametrize(
    "args",
    [
        ["carol", "--jkt", "short"],
        ["carol"],
        ["carol", "--jwk-file", "/nonexistent/key.jwk"],
    ],
)
def test_the_command_refuses_what_binds_no_key(args):
    with pytest.raises(CommandError):
        create(*args)
    assert not OperatorKey.objects.exists()


def test_names_are_unique(dpop_key):
    create("dave", "--jkt", dpop_key.jkt)
    with pytest.raises(CommandError, match="already exists"):
        create("dave", "--jkt", dpop_key.jkt)


# --- authentication --------------------------------------------------------------------------------


def test_an_operator_key_with_its_proof_opens_operator_endpoints(api_key, dpop_key):
    response = get(VERIFY, operator_headers(dpop_key, api_key, "GET", VERIFY))
    assert response.status_code == 200 and response.json()["intact"] is True


def test_an_operator_key_is_not_an_admin(api_key, dpop_key):
    path = "/v1/platform/admin-audit"
    response = get(path, operator_headers(dpop_key, api_key, "GET", path))
    assert response.status_code == 403


def test_an_operator_key_without_its_proof_is_useless(api_key, dpop_key):
    response = get(VERIFY, {"HTTP_AUTHORIZATION": f"DPoP {api_key}"})
    assert response.json() == {"error": "missing_dpop_header"} and response.status_code == 401


def test_a_proof_from_another_key_is_key_binding_failed(api_key):
    response = get(VERIFY, operator_headers(make_key(), api_key, "GET", VERIFY))
    assert response.status_code == 401 and response.json()["error"] == "key_binding_failed"


def test_the_proof_must_hash_the_operator_key(api_key, dpop_key):
    headers = operator_headers(dpop_key, api_key, "GET", VERIFY, claims={"ath": gate_client.ath("mdo_other")})
    response = get(VERIFY, headers)
    assert response.status_code == 401 and response.json()["error"] == "invalid_dpop"


def test_the_proof_must_name_the_route(api_key, dpop_key):
    response = get(VERIFY, operator_headers(dpop_key, api_key, "POST", VERIFY))
    assert response.status_code == 401 and "htm" in response.json()["deny_reason"]
    response = get(VERIFY, operator_headers(dpop_key, api_key, "GET", "/v1/audit/events"))
    assert response.status_code == 401 and "htu" in response.json()["deny_reason"]


def test_an_operator_proof_is_single_use(api_key, dpop_key):
    headers = operator_headers(dpop_key, api_key, "GET", VERIFY)
    assert get(VERIFY, headers).status_code == 200
    response = get(VERIFY, headers)
    assert (response.status_code, response.json()) == (401, {"error": "replay_detected"})


@pytest.mark.parametrize(
    "secret",
    ["mdo_000000000000_nothing", "mdo_garbage"],
)
def test_an_unknown_operator_key_is_invalid_operator_token(secret, dpop_key):
    response = get(VERIFY, operator_headers(dpop_key, secret, "GET", VERIFY))
    assert (response.status_code, response.json()) == (401, {"error": "invalid_operator_token"})


def test_a_revoked_operator_key_is_invalid_operator_token(api_key, dpop_key):
    revoke_operator_key(OperatorKey.objects.get(), by="admin")
    response = get(VERIFY, operator_headers(dpop_key, api_key, "GET", VERIFY))
    assert (response.status_code, response.json()) == (401, {"error": "invalid_operator_token"})
    assert AdminAuditRecord.objects.filter(action="gate.operator_key_revoked").exists()


def test_authenticate_operator_answers_latchgates_admin_codes(api_key, dpop_key):
    def code(authorization, dpop=None):
        with pytest.raises(GateError) as caught:
            authenticate_operator("GET", VERIFY, authorization, dpop)
        return caught.value.code

    assert code(None) == "missing_auth_header"
    assert code(f"Bearer {api_key}") == "invalid_auth_scheme"
    assert code("DPoP mdt_000000000000_x", "proof") == "invalid_operator_token"
    assert code(f"DPoP {api_key}") == "missing_dpop_header"
    context = authenticate_operator("GET", VERIFY, f"DPoP {api_key}", dpop_key.proof("GET", VERIFY, api_key))
    assert (context.name, context.jkt) == ("alice", dpop_key.jkt)


def test_an_operator_key_may_take_a_lease_for_an_agent(api_key, dpop_key):
    path = "/v1/leases"
    body = gate_client.lease_body(make_key(), agent_id="agent-ops", scopes=["audit:read"])
    response = APIClient().post(path, body, format="json", **operator_headers(dpop_key, api_key, "POST", path))
    assert response.status_code == 200
    assert GateLease.objects.get().identity == "operator:alice"


# --- the console ---------------------------------------------------------------------------------


@pytest.fixture
def superuser_client(organization, client):
    from governance.models import Person

    person = Person.objects.create_superuser("root", "root@example.com", "pw", organization=organization)
    client.force_login(person)
    return client


def test_the_console_lists_and_revokes_operator_keys_but_never_edits_them(superuser_client, api_key):
    key = OperatorKey.objects.get()
    assert superuser_client.get("/admin/governance/operatorkey/").status_code == 200
    page = superuser_client.get(f"/admin/governance/operatorkey/{key.pk}/change/")
    assert page.status_code == 200 and key.key_hash not in page.content.decode()
    assert superuser_client.get("/admin/governance/operatorkey/add/").status_code == 403
    superuser_client.post(
        "/admin/governance/operatorkey/", {"action": "revoke", "_selected_action": [str(key.pk)]}, follow=True
    )
    key.refresh_from_db()
    assert key.revoked_at is not None


def test_the_console_drains_and_revokes_all_through_the_services(superuser_client):
    from governance.gate.state import gate_state

    assert superuser_client.get("/admin/governance/gatestate/").status_code == 200
    for action in ("drain", "revoke_all"):
        superuser_client.post("/admin/governance/gatestate/", {"action": action, "_selected_action": ["1"]})
    state = gate_state(max_age=0)
    assert state.draining and state.drain_started_by == "root" and state.epoch == 1
    superuser_client.post("/admin/governance/gatestate/", {"action": "resume", "_selected_action": ["1"]})
    assert not gate_state(max_age=0).draining
    assert superuser_client.get("/admin/governance/gatelease/").status_code == 200
