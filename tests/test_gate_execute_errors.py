"""Every error code of the reference's execute table that can occur in Mandate, over HTTP
(Django's test client), each with its ledger event: from the lease step on, a refusal is a
``GATE_ACTION_CALL`` event (decision ``deny``, ``error`` for a 5xx) naming its code; the rate
limit and the drain come before it and write none. 5xx bodies carry the code alone. The codes
that cannot occur here are in docs/gate.md ("Execute, approvals and operator controls")."""

import json
import time
import types
import uuid

import pytest

from envelopes.gate import budgets
from envelopes.gate.steps import dispatching
from envelopes.models import GateExecution, SessionBudget
from evidence.models import AuditEvent, Receipt
from governance.control_characters import has_control_characters
from governance.gate import auth, jws
from tests import gate_client
from tests.faults import free_port
from tests.gate_client import DROP, make_key
from tests.gate_world import Target, gate, refuse_receipts, target  # noqa: F401  (fixtures)

pytestmark = pytest.mark.django_db

FETCH = "/v1/actions/local_fetch/execute"


def post(api_client, path, body, headers=None, raw=None):
    content = raw if raw is not None else json.dumps(body)
    return api_client.post(path, content, content_type="application/json", **(headers or {}))


def execute(api_client, lease, action_id, body, **overrides):
    path = f"/v1/actions/{action_id}/execute"
    return post(api_client, path, body, lease.headers("POST", path, **overrides))


def call_events():
    return list(AuditEvent.objects.filter(event_type="GATE_ACTION_CALL").values_list("payload", flat=True))


def refused_with(response, status: int, code: str, *, decision: str | None = None) -> dict:
    """The answer is ``status`` ``code`` and the ledger holds exactly one event saying so;
    returns the answer's body."""
    body = response.json()
    assert (response.status_code, body["error"]) == (status, code), response.content
    if status >= 500:
        assert body == {"error": code}  # 5xx: the code alone
    events = [e for e in call_events() if e.get("error") == code]
    assert len(events) == 1, events
    assert events[0]["decision"] == (decision or ("error" if status >= 500 else "deny"))
    assert events[0]["status"] == status
    return body


def resigned(token: str, *, header=None, claims=None) -> str:
    """A compact JWS with one segment re-encoded and its signature kept (tampering)."""
    header_b64, payload_b64, signature = token.split(".")
    if header is not None:
        header_b64 = gate_client.segment({**jws.read_json_segment(header_b64), **header})
    if claims is not None:
        payload_b64 = gate_client.segment({**jws.read_json_segment(payload_b64), **claims})
    return f"{header_b64}.{payload_b64}.{signature}"


def signed_by_another_key(lease) -> str:
    """The lease's header and claims (its real kid), signed by a key that is not ours."""
    header, payload, _ = lease.lease_jwt.split(".")
    return f"{header}.{payload}.{make_key().sign(f'{header}.{payload}'.encode())}"


# --- 401: the lease and the proof ------------------------------------------------------------------


def test_an_expired_lease_is_401_lease_expired(api_client, gate, target, monkeypatch):
    lease = gate.lease()
    later = time.time() + 301  # the lease lives 300 s
    monkeypatch.setattr(auth, "time", types.SimpleNamespace(time=lambda: later))
    response = execute(api_client, lease, "local_fetch", {"url": f"{target}/"}, claims={"iat": int(later)})
    refused_with(response, 401, "lease_expired")
    assert not Target.seen


@pytest.mark.parametrize("forge", ["tampered", "wrong_key", "bearer", "garbage"])
def test_a_lease_that_is_not_ours_is_401_invalid_lease(api_client, gate, target, forge):
    lease = gate.lease()
    token = {
        "tampered": lambda: resigned(lease.lease_jwt, claims={"sub": "agent-someone-else"}),
        "wrong_key": lambda: signed_by_another_key(lease),
        "bearer": lambda: lease.lease_jwt,
        "garbage": lambda: "not-a-lease",
    }[forge]()
    scheme = "Bearer" if forge == "bearer" else "DPoP"
    headers = {"HTTP_AUTHORIZATION": f"{scheme} {token}", "HTTP_DPOP": lease.key.proof("POST", FETCH, token)}
    refused_with(post(api_client, FETCH, {"url": f"{target}/"}, headers), 401, "invalid_lease")
    assert not Target.seen


def test_after_revoke_all_an_outstanding_lease_is_401_invalid_lease(api_client, gate, target):
    lease = gate.lease()
    assert execute(api_client, lease, "local_fetch", {"url": f"{target}/"}).status_code == 200
    revoked = gate.operator_client.post("/v1/admin/revoke-all")
    assert revoked.json() == {"previous_epoch": 0, "current_epoch": 1}
    refused_with(execute(api_client, lease, "local_fetch", {"url": f"{target}/"}), 401, "invalid_lease")
    assert execute(api_client, gate.lease(), "local_fetch", {"url": f"{target}/"}).status_code == 200


def _proof(lease, case: str) -> str:
    now = int(time.time())
    other = make_key()
    return {
        "wrong_method": lambda: lease.proof("GET", FETCH),
        "wrong_url": lambda: lease.proof("POST", "/v1/actions/http_fetch/execute"),
        "wrong_host": lambda: lease.proof("POST", "https://elsewhere.example.com" + FETCH),
        "expired_iat": lambda: lease.proof("POST", FETCH, claims={"iat": now - 120}),
        "future_iat": lambda: lease.proof("POST", FETCH, claims={"iat": now + 60}),
        "wrong_key_binding": lambda: other.proof("POST", FETCH, lease.lease_jwt),
        "signed_by_another_key": lambda: lease.key.proof("POST", FETCH, lease.lease_jwt, signer=other),
        "wrong_ath": lambda: lease.proof("POST", FETCH, claims={"ath": gate_client.ath("another-token")}),
        "missing_ath": lambda: lease.proof("POST", FETCH, claims={"ath": DROP}),
        "tampered_header": lambda: resigned(lease.proof("POST", FETCH), header={"kid": "mine"}),
        "tampered_payload": lambda: resigned(lease.proof("POST", FETCH), claims={"jti": str(uuid.uuid4())}),
        "missing_jwk": lambda: lease.proof("POST", FETCH, header={"jwk": DROP}),
        "wrong_typ": lambda: lease.proof("POST", FETCH, header={"typ": "JWT"}),
        "alg_none": lambda: lease.proof("POST", FETCH, header={"alg": "none"}),
        "malformed": lambda: "a.b",
    }[case]()


@pytest.mark.parametrize(
    "case",
    [
        "wrong_method",
        "wrong_url",
        "wrong_host",
        "expired_iat",
        "future_iat",
        "wrong_key_binding",
        "signed_by_another_key",
        "wrong_ath",
        "missing_ath",
        "tampered_header",
        "tampered_payload",
        "missing_jwk",
        "wrong_typ",
        "alg_none",
        "malformed",
    ],
)
def test_a_bad_proof_is_401_invalid_dpop_with_a_reason(api_client, gate, target, case):
    lease = gate.lease()
    headers = {"HTTP_AUTHORIZATION": f"DPoP {lease.lease_jwt}", "HTTP_DPOP": _proof(lease, case)}
    body = refused_with(post(api_client, FETCH, {"url": f"{target}/"}, headers), 401, "invalid_dpop")
    assert body["deny_reason"] and not has_control_characters(body["deny_reason"])
    (event,) = [e for e in call_events() if e["error"] == "invalid_dpop"]
    assert event["reason"] == body["deny_reason"]
    assert not Target.seen


def test_a_replayed_proof_is_401_replay_detected(api_client, gate, target):
    lease = gate.lease()
    headers = lease.headers("POST", FETCH)
    assert post(api_client, FETCH, {"url": f"{target}/"}, headers).status_code == 200
    refused_with(post(api_client, FETCH, {"url": f"{target}/"}, headers), 401, "replay_detected")
    assert len(Target.seen) == 1


def test_a_replayed_proof_is_refused_by_the_table_without_redis(api_client, gate, target, settings):
    settings.REDIS_URL = ""
    lease = gate.lease()
    headers = lease.headers("POST", FETCH)
    assert post(api_client, FETCH, {"url": f"{target}/"}, headers).status_code == 200
    refused_with(post(api_client, FETCH, {"url": f"{target}/"}, headers), 401, "replay_detected")


@pytest.mark.parametrize("present", ["none", "authorization_only", "dpop_only"])
def test_a_missing_header_is_401_missing_auth_header(api_client, gate, target, present):
    lease = gate.lease()
    headers = {
        "none": {},
        "authorization_only": {"HTTP_AUTHORIZATION": f"DPoP {lease.lease_jwt}"},
        "dpop_only": {"HTTP_DPOP": lease.proof("POST", FETCH)},
    }[present]
    body = refused_with(post(api_client, FETCH, {"url": f"{target}/"}, headers), 401, "missing_auth_header")
    assert body == {"error": "missing_auth_header"}


# --- 403: policy, trust, budgets ---------------------------------------------------------------------


def test_an_action_not_granted_is_403_policy_denied_with_a_reason(api_client, gate):
    response = execute(api_client, gate.lease(), "http_post", {"url": "https://httpbin.org/post", "body": "{}"})
    body = refused_with(response, 403, "policy_denied")
    assert body["deny_reason"] == "principal 'agent-payments-prod' is not authorised for action 'http_post'"


def test_a_missing_scope_is_403_policy_denied(api_client, gate, target):
    lease = gate.lease(scopes=["custom:read"])
    body = refused_with(execute(api_client, lease, "local_fetch", {"url": f"{target}/"}), 403, "policy_denied")
    assert "tools:call" in body["deny_reason"]


def test_a_deny_reason_is_stripped_of_control_characters_and_cut_at_500(api_client, gate):
    """The denied path is the agent's text: escape sequences and length must not come back."""
    path = "data/\x1b[31m\x07" + "x" * 700 + "/.git/config"
    response = execute(api_client, gate.lease(), "fs_read", {"operation": "read", "path": path})
    body = refused_with(response, 403, "policy_denied")
    reason = body["deny_reason"]
    assert reason.startswith("path(s) denied for action 'fs_read': data/")
    assert len(reason) <= 500 and not has_control_characters(reason)
    assert "\x1b" not in response.content.decode() and "\\u001b" not in response.content.decode()


def test_a_deny_reason_from_the_engine_is_sanitized_at_the_edge(api_client, gate, target, monkeypatch):
    """Whatever the policy says (here a stand-in engine), the answer and the ledger event carry
    it without control characters and at most 500 characters long."""
    from controlplane.gate.policy import PolicyDecision

    noisy = "line one\nline two\r\x1b[2J" + "y" * 900
    monkeypatch.setattr(dispatching, "decide_policy", lambda _input: PolicyDecision("deny", noisy, 1, None, (), False))
    body = refused_with(execute(api_client, gate.lease(), "local_fetch", {"url": f"{target}/"}), 403, "policy_denied")
    assert body["deny_reason"].startswith("line oneline two[2J") and len(body["deny_reason"]) == 500
    assert not Target.seen


def test_a_wasm_action_whose_module_is_missing_is_403_action_not_registered(api_client, gate, settings):
    from controlplane.gate.registry import reload

    (settings.MANDATE_ACTIONS_DIR / "modules" / "echo.wasm").unlink()
    reload()
    refused_with(execute(api_client, gate.lease(), "echo_wasm", {"message": "hi"}), 403, "action_not_registered")


def test_a_wasm_module_changed_on_disk_is_403_action_digest_mismatch(api_client, gate, settings):
    from controlplane.gate.registry import reload

    lease = gate.lease()
    assert execute(api_client, lease, "echo_wasm", {"message": "hi"}).status_code == 200
    module = settings.MANDATE_ACTIONS_DIR / "modules" / "echo.wasm"
    module.write_bytes(module.read_bytes() + b"\x00\x04\x01x")  # a custom section: still valid wasm
    reload()
    refused_with(execute(api_client, lease, "echo_wasm", {"message": "hi"}), 403, "action_digest_mismatch")


def test_a_spent_budget_is_403_budget_exhausted(api_client, gate, target):
    lease = gate.lease(budgets={"max_calls": 1})
    assert execute(api_client, lease, "local_fetch", {"url": f"{target}/1"}).status_code == 200
    refused_with(execute(api_client, lease, "local_fetch", {"url": f"{target}/2"}), 403, "budget_exhausted")
    assert SessionBudget.objects.get(session_id=lease.session_id).calls_used == 1
    assert len(Target.seen) == 1


def test_a_budget_spent_after_the_policy_looked_is_403_budget_exhausted_at_the_debit(
    api_client, gate, target, monkeypatch
):
    """Another call took the last one between the snapshot and the debit: the conditional
    debit refuses, nothing runs, the counter never passes the limit."""
    lease = gate.lease(budgets={"max_calls": 1})
    SessionBudget.objects.filter(session_id=lease.session_id).update(calls_used=1)
    monkeypatch.setattr(budgets, "snapshot", lambda session_id, limits: budgets.BudgetSnapshot(1, 0))
    refused_with(execute(api_client, lease, "local_fetch", {"url": f"{target}/"}), 403, "budget_exhausted")
    assert SessionBudget.objects.get(session_id=lease.session_id).calls_used == 1
    assert not Target.seen


def test_a_lease_whose_budget_counters_are_gone_is_403_budget_session_not_found(api_client, gate, target):
    lease = gate.lease(budgets={"max_calls": 5})
    counters = SessionBudget.objects.get(session_id=lease.session_id)  # opened with the lease
    assert (counters.max_calls, counters.calls_used) == (5, 0)
    counters.delete()
    response = execute(api_client, lease, "local_fetch", {"url": f"{target}/"})
    refused_with(response, 403, "budget_session_not_found")
    assert not SessionBudget.objects.filter(session_id=lease.session_id).exists()  # never fresh counters
    assert not Target.seen


# --- 404, 413, 400, 422 ----------------------------------------------------------------------------------


def test_an_unknown_action_is_404_action_not_found(api_client, gate):
    refused_with(execute(api_client, gate.lease(), "no_such_action", {"url": "x"}), 404, "action_not_found")


def test_a_body_over_the_actions_limit_is_413(api_client, gate, target):
    body = {"url": f"{target}/" + "a" * 70_000}  # local_fetch takes 64 KiB
    refused_with(execute(api_client, gate.lease(), "local_fetch", body), 413, "request_too_large")
    assert not Target.seen


def test_a_body_over_the_transport_limit_is_413_before_anything_is_read(api_client, gate):
    lease = gate.lease()
    raw = json.dumps({"url": "x" * (1024 * 1024 + 10)})
    response = post(api_client, FETCH, None, lease.headers("POST", FETCH), raw=raw)
    assert response.status_code == 413 and "error" in response.json()
    assert call_events() == []  # the transport refuses it: no lease was looked at


def test_a_body_that_is_not_json_is_400_invalid_request(api_client, gate):
    response = post(api_client, FETCH, None, gate.lease().headers("POST", FETCH), raw='{"url": ')
    assert refused_with(response, 400, "invalid_request")["reason"]


@pytest.mark.parametrize(
    ("body", "mentions"),
    [({"url": 5}, "url"), ({"url": "http://127.0.0.1/", "extra": 1}, "extra"), ({}, "url")],
)
def test_a_body_against_the_schema_is_422_schema_violation_with_a_reason(api_client, gate, body, mentions):
    answer = refused_with(execute(api_client, gate.lease(), "local_fetch", body), 422, "schema_violation")
    assert mentions in answer["reason"]


# --- 5xx: the code alone ---------------------------------------------------------------------------


def test_a_failing_provider_is_502_action_execution_failed_with_its_receipt(api_client, gate):
    response = execute(api_client, gate.lease(), "local_fetch", {"url": f"http://127.0.0.1:{free_port()}/down"})
    assert (response.status_code, response.json()) == (502, {"error": "action_execution_failed"})
    (event,) = call_events()
    assert event["decision"] == "error" and event["receipt_id"]
    receipt = Receipt.objects.get(receipt_id=event["receipt_id"])
    assert receipt.failure_class == "provider_error" and receipt.normalized_result["kind"] == "provider_failure"


def test_a_draining_gate_is_503_draining_without_a_ledger_event(api_client, gate, target):
    lease = gate.lease()
    assert gate.operator_client.post("/v1/admin/drain").status_code == 200
    response = execute(api_client, lease, "local_fetch", {"url": f"{target}/"})
    assert (response.status_code, response.json()) == (503, {"error": "draining"})
    assert call_events() == [] and not Target.seen


def test_with_redis_down_the_call_is_503_replay_cache_unavailable(api_client, gate, target, settings):
    lease = gate.lease()
    settings.REDIS_URL = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens: fail closed
    refused_with(execute(api_client, lease, "local_fetch", {"url": f"{target}/"}), 503, "replay_cache_unavailable")
    assert not Target.seen


def test_over_the_rate_the_call_is_429_without_a_ledger_event(api_client, gate, target, settings):
    settings.MANDATE_GATE_EXECUTE_RATE_PER_SECOND = 1.0
    lease = gate.lease()
    assert execute(api_client, lease, "local_fetch", {"url": f"{target}/1"}).status_code == 200
    response = execute(api_client, lease, "local_fetch", {"url": f"{target}/2"})
    assert (response.status_code, response.json()) == (429, {"error": "rate_limit_exceeded"})
    assert [e["decision"] for e in call_events()] == ["allow"]
    assert len(Target.seen) == 1


def test_when_the_evidence_cannot_be_written_the_call_is_500_evidence_persistence_failed(
    api_client, gate, target, monkeypatch
):
    refuse_receipts(monkeypatch)
    response = execute(api_client, gate.lease(), "local_fetch", {"url": f"{target}/"})
    refused_with(response, 500, "evidence_persistence_failed")
    assert len(Target.seen) == 1  # it ran: the ledger says the evidence is missing
    assert not Receipt.objects.exists() and not GateExecution.objects.exists()


def test_a_policy_that_cannot_decide_is_503_policy_engine_unavailable(api_client, gate, target, settings, tmp_path):
    """A Rego without a default that decides nothing for this call (it passes the reload's
    check, which asks about another action)."""
    from controlplane.gate.registry import reload

    policy = tmp_path / "partial.rego"
    policy.write_text(
        "package mandate.gate\nimport rego.v1\n"
        'decision := {"result": "allow", "sinks": []} if { input.action.action_id != "local_fetch" }\n'
    )
    settings.MANDATE_GATE_POLICY_FILE = policy
    reload()
    refused_with(
        execute(api_client, gate.lease(), "local_fetch", {"url": f"{target}/"}), 503, "policy_engine_unavailable"
    )
    assert not Target.seen


def test_an_unexpected_failure_is_500_internal_error_in_the_ledger(api_client, gate, target, monkeypatch):
    def broken(call):
        raise RuntimeError("a bug with a secret detail")

    monkeypatch.setattr(dispatching, "verify", broken)
    response = execute(api_client, gate.lease(), "local_fetch", {"url": f"{target}/"})
    refused_with(response, 500, "internal_error")
    assert b"secret detail" not in response.content


def test_every_refusal_from_the_lease_on_names_the_call(api_client, gate):
    """The refusal's event carries what was known: the agent and session once the lease held."""
    lease = gate.lease()
    execute(api_client, lease, "http_post", {"url": "https://httpbin.org/post", "body": "{}"})
    post(api_client, FETCH, {"url": "x"})  # no lease
    denied, anonymous = sorted(call_events(), key=lambda e: e["error"])[::-1]
    assert (denied["principal"], denied["session_id"], denied["action_id"]) == (
        "agent-payments-prod",
        lease.session_id,
        "http_post",
    )
    assert (anonymous["error"], anonymous["principal"], anonymous["session_id"]) == ("missing_auth_header", None, None)


__all__ = ["gate", "target"]
