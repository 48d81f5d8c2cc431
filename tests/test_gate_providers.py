"""The action gate's plan, builtin providers (http_api, fs), dispatch and verifiers."""

import base64
import hashlib
import json
import logging
import os
from dataclasses import FrozenInstanceError, replace

import pytest

from envelopes.gate.plan import ExecutionPlan
from envelopes.gate.providers import ProviderContext, ProviderResult, dispatch, http_api, verify
from tests.gate_target import Target

SECRET = "s3cr3t-token-value-123"


@pytest.fixture
def target():
    server = Target()
    yield server
    server.close()


def http_plan(target, *, method="GET", url="{{url}}", headers=None, body_template=None, **extra):
    manifest = {
        "action_id": "http_call",
        "version": "1.0.0",
        "provider_module_digest": "builtin:http_api",
        "template": {"method": method, "url_template": url, "headers": headers or {}, "body_template": body_template},
        "egress": {"profile": "proxy_allowlist", "allowed_domains": ["127.0.0.1"]},
        "secrets": [{"name": "TOKEN", "required": True}, {"name": "OPTIONAL", "required": False}],
        "declared_side_effects": ["http_read", "http_write"],
        "verifier_kind": "http_status",
    }
    return ExecutionPlan.from_manifest({**manifest, **extra})


def fs_plan(effects=("fs_read", "fs_write", "fs_delete"), **fs):
    rules = {
        "allowed_operations": ["read", "write", "list"],
        "allowed_paths": ["src/**", "notes.md", "."],
        "denied_paths": ["**/.env", "**/secrets/**"],
        "max_file_bytes": 1024,
        **fs,
    }
    return ExecutionPlan.from_manifest(
        {
            "action_id": "fs_any",
            "version": "1.0.0",
            "provider_module_digest": "builtin:fs",
            "fs": rules,
            "declared_side_effects": list(effects),
            "verifier_kind": "fs_hash",
        }
    )


def secrets(name):
    return {"TOKEN": SECRET}.get(name)


# --- the plan --------------------------------------------------------------------------------


def test_plan_from_a_manifest_dataclass(target):
    from dataclasses import make_dataclass

    plan = http_plan(target)
    manifest_type = make_dataclass("Manifest", [(k, object) for k in plan.to_dict()] + [("risk_level", str)])
    manifest = manifest_type(**plan.to_dict(), risk_level="low")
    assert ExecutionPlan.from_manifest(manifest) == plan


def test_plan_round_trips_and_its_hash_is_stable(target):
    plan = http_plan(target, verification_config={"expected": [200, 201]})
    stored = json.loads(json.dumps(plan.to_dict()))
    again = ExecutionPlan.from_dict(stored)
    assert again == plan
    assert again.plan_hash() == plan.plan_hash()
    assert plan.plan_hash().startswith("sha256:") and len(plan.plan_hash()) == 71
    assert hash(again) == hash(plan)


def test_plan_hash_changes_when_any_field_is_tampered(target):
    plan = http_plan(target)
    stored = plan.to_dict()
    stored["egress"]["allowed_domains"].append("evil.example")
    assert ExecutionPlan.from_dict(stored).plan_hash() != plan.plan_hash()
    stored = plan.to_dict()
    stored["resource_limits"]["timeout_seconds"] = 60
    assert ExecutionPlan.from_dict(stored).plan_hash() != plan.plan_hash()


def test_plan_is_immutable_all_the_way_down(target):
    plan = http_plan(target, body_template={"a": ["{{x}}"]})
    with pytest.raises(FrozenInstanceError):
        plan.action_id = "other"
    with pytest.raises(TypeError):
        plan.template.body_template["a"] = 1
    with pytest.raises(TypeError):
        plan.template.headers["X"] = "y"


def test_stored_plan_with_unknown_fields_is_refused(target):
    stored = http_plan(target).to_dict()
    with pytest.raises(ValueError, match="unknown field 'approved_by'"):
        ExecutionPlan.from_dict({**stored, "approved_by": "someone"})


def test_manifest_without_allowed_methods_uses_its_side_effects_and_template(target):
    plan = http_plan(target, method="DELETE", declared_side_effects=["http_read"])
    assert plan.egress.allowed_methods == ("GET", "HEAD", "DELETE")
    assert plan.secret_names == ("TOKEN", "OPTIONAL")


# --- builtin:http_api ------------------------------------------------------------------------


def test_http_api_returns_status_safe_headers_and_parsed_json(target):
    result = dispatch(http_plan(target), {"url": f"{target.base}/json?q=1"}, ProviderContext(secrets=secrets))
    assert result.ok, result.failure
    assert result.output["headers"].pop("date")
    assert result.output == {
        "status": 200,
        "headers": {"content-type": "application/json", "content-length": "50", "x-request-id": "r1"},
        "body": {"ok": True, "path": "/json", "query": {"q": "1"}},
    }
    assert result.duration_ms >= 1
    assert result.effect_evidence == ({"method": "GET", "host": "127.0.0.1", "status": 200},)
    assert result.normalized_result() == {"kind": "success", "summary": "HTTP 200"}


def test_http_api_text_body_stays_text(target):
    result = dispatch(http_plan(target), {"url": f"{target.base}/text"}, ProviderContext(secrets=secrets))
    assert result.output["body"] == "plain words"


def test_url_values_in_path_and_query_are_percent_encoded(target):
    plan = http_plan(target, url=f"{target.base}/echo/{{{{name}}}}?q={{{{q}}}}&n={{{{n}}}}")
    body = {"name": "../../admin?x=1#f", "q": "a b&c=d", "n": 7}
    result = dispatch(plan, body, ProviderContext(secrets=secrets))
    assert result.ok, result.failure
    assert target.seen[0]["path"] == "/echo/..%2F..%2Fadmin%3Fx%3D1%23f?q=a%20b%26c%3Dd&n=7"


def test_a_value_in_the_host_part_may_only_hold_host_characters(target):
    plan = http_plan(target, url="http://{{host}}:" + str(target.port) + "/json")
    assert dispatch(plan, {"host": "127.0.0.1"}, ProviderContext(secrets=secrets)).ok
    result = dispatch(plan, {"host": "evil.example/x?"}, ProviderContext(secrets=secrets))
    assert result.failure == ("provider_error", "field 'host' is not a valid host name part")


def test_body_template_json_encodes_values(target):
    plan = http_plan(
        target,
        method="POST",
        url=f"{target.base}/echo",
        body_template={"title": "{{title}}", "count": "{{count}}", "tags": "{{tags}}", "note": "by {{who}}"},
    )
    body = {"title": 'He said "hi"\n', "count": 3, "tags": ["a", "b"], "who": "ann"}
    result = dispatch(plan, body, ProviderContext(secrets=secrets))
    sent = json.loads(result.output["body"]["body"])
    assert sent == {"title": 'He said "hi"\n', "count": 3, "tags": ["a", "b"], "note": "by ann"}
    assert result.output["body"]["headers"]["Content-Type"] == "application/json"


def test_string_body_template_that_is_not_json_until_filled(target):
    plan = http_plan(target, method="POST", url=f"{target.base}/echo", body_template='{"n": {{n}}, "s": {{s}}}')
    result = dispatch(plan, {"n": 5, "s": 'x", "admin": true, "y": "'}, ProviderContext(secrets=secrets))
    assert json.loads(result.output["body"]["body"]) == {"n": 5, "s": 'x", "admin": true, "y": "'}


def test_whole_body_placeholder_sends_the_agents_text(target):
    plan = http_plan(target, method="POST", url=f"{target.base}/echo", body_template="{{body}}")
    result = dispatch(plan, {"body": '{"raw": 1}'}, ProviderContext(secrets=secrets))
    assert result.output["body"]["body"] == '{"raw": 1}'


def test_missing_template_field_is_a_provider_failure_and_nothing_is_sent(target):
    plan = http_plan(target, url=f"{target.base}/echo/{{{{id}}}}")
    result = dispatch(plan, {}, ProviderContext(secrets=secrets))
    assert result.failure == ("provider_error", "the request body has no field 'id' for the template")
    assert result.normalized_result()["kind"] == "provider_failure"
    assert target.seen == []


def test_secret_in_a_header_is_sent_but_never_shown_or_logged(target, caplog):
    caplog.set_level(logging.DEBUG)
    plan = http_plan(target, url=f"{target.base}/echo", headers={"Authorization": "Bearer {{secret:TOKEN}}"})
    result = dispatch(plan, {}, ProviderContext(secrets=secrets))
    assert target.seen[0]["headers"]["Authorization"] == f"Bearer {SECRET}"
    # The target echoes the header back: the answer shows it redacted.
    assert result.output["body"]["headers"]["Authorization"] == "Bearer [redacted]"
    assert SECRET not in json.dumps(result.output) + repr(result) + json.dumps(result.effect_evidence)
    assert SECRET not in caplog.text


def test_secrets_must_be_declared_and_required_ones_configured(target):
    undeclared = http_plan(target, url=f"{target.base}/echo", headers={"X-Key": "{{secret:OTHER}}"})
    result = dispatch(undeclared, {}, ProviderContext(secrets=secrets))
    assert result.failure == ("provider_error", "secret OTHER is not declared by the action")
    required = http_plan(target, url=f"{target.base}/echo", headers={"X-Key": "{{secret:TOKEN}}"})
    result = dispatch(required, {}, ProviderContext(secrets=lambda name: None))
    assert result.failure == ("provider_error", "secret TOKEN is not configured")
    optional = http_plan(target, url=f"{target.base}/echo", headers={"X-Opt": "{{secret:OPTIONAL}}"})
    assert dispatch(optional, {}, ProviderContext(secrets=secrets)).ok
    assert "X-Opt" not in target.seen[-1]["headers"]
    assert target.seen[-1]["path"] == "/echo" and len(target.seen) == 1


def test_secrets_are_refused_outside_headers(target):
    plan = http_plan(target, url=f"{target.base}/echo?k={{{{secret:TOKEN}}}}")
    assert dispatch(plan, {}, ProviderContext(secrets=secrets)).failure == (
        "provider_error",
        "secrets may only be used in headers",
    )


def test_target_url_preview_for_pre_checks(target):
    plan = http_plan(target, url="https://api.example.com/repos/{{repo}}")
    assert http_api.target_url(plan, {"repo": "a/b"}) == "https://api.example.com/repos/a%2Fb"


def test_egress_refusal_is_a_policy_violation_result(target):
    result = dispatch(http_plan(target), {"url": "https://elsewhere.example/x"}, ProviderContext(secrets=secrets))
    assert result.failure == ("policy_violation", "domain elsewhere.example is not allowed for this action")
    assert result.output == {}


def test_timeout_is_a_timeout_result(target):
    plan = http_plan(target, resource_limits={"timeout_seconds": 0.3})
    result = dispatch(plan, {"url": f"{target.base}/slow?s=2"}, ProviderContext(secrets=secrets))
    assert result.failure.failure_class == "timeout"
    assert result.normalized_result()["kind"] == "timeout"


# --- builtin:fs ------------------------------------------------------------------------------


@pytest.fixture
def root(tmp_path):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "app.py").write_text("print('hi')\n")
    (tmp_path / "src" / ".env").write_text("KEY=1\n")
    (tmp_path / "src" / "secrets").mkdir()
    (tmp_path / "src" / "secrets" / "k.txt").write_text("k")
    (tmp_path / "other.txt").write_text("not allowed")
    return tmp_path


def fs(plan, body, root):
    return dispatch(plan, body, ProviderContext(fs_root=str(root)))


def test_fs_read_returns_content_and_hash(root):
    result = fs(fs_plan(), {"operation": "read", "path": "src/app.py"}, root)
    digest = "sha256:" + hashlib.sha256(b"print('hi')\n").hexdigest()
    assert result.output == {
        "path": "src/app.py",
        "bytes": 12,
        "sha256": digest,
        "encoding": "utf-8",
        "content": "print('hi')\n",
    }
    assert verify(fs_plan(), result).outcome == "verified"


def test_fs_write_creates_file_with_evidence_and_verifies(root):
    plan = fs_plan()
    result = fs(plan, {"operation": "write", "path": "src/new/mod.py", "content": "x = 1\n"}, root)
    assert result.ok, result.failure
    digest = "sha256:" + hashlib.sha256(b"x = 1\n").hexdigest()
    assert result.effect_evidence == ({"operation": "write", "path": "src/new/mod.py", "sha256": digest, "bytes": 6},)
    assert (root / "src" / "new" / "mod.py").read_text() == "x = 1\n"
    verification = verify(plan, result)
    assert verification.outcome == "verified"
    assert verification.evidence == {"path": "src/new/mod.py", "sha256": digest, "bytes": 6}
    assert verification.is_fully_successful(result)
    # Someone changes the file before verification: the verifier reads the disk, not the report.
    (root / "src" / "new" / "mod.py").write_text("x = 2\n")
    assert verify(plan, result).outcome == "verification_failed"


def test_fs_overwrite_records_the_previous_hash_and_create_refuses_an_existing_file(root):
    content = base64.b64encode(b"\x00\x01binary").decode()
    result = fs(fs_plan(), {"operation": "write", "path": "src/app.py", "content_base64": content}, root)
    assert result.effect_evidence[0]["before_sha256"] == "sha256:" + hashlib.sha256(b"print('hi')\n").hexdigest()
    assert (root / "src" / "app.py").read_bytes() == b"\x00\x01binary"
    result = fs(fs_plan(), {"operation": "write", "path": "src/app.py", "content": "y", "mode": "create"}, root)
    assert result.failure == ("provider_error", "file src/app.py already exists (mode create)")
    stale = {"operation": "write", "path": "src/app.py", "content": "z", "expected_before_hash": "sha256:" + "0" * 64}
    assert "expected_before_hash" in fs(fs_plan(), stale, root).failure.reason
    assert (root / "src" / "app.py").read_bytes() == b"\x00\x01binary"


def test_fs_list_hides_denied_entries_and_verifies(root):
    plan = fs_plan()
    result = fs(plan, {"operation": "list", "path": "src"}, root)
    assert result.output == {
        "path": "src",
        "entries": [{"name": "app.py", "type": "file", "bytes": 12}],
        "truncated": False,
    }
    assert verify(plan, result).outcome == "verified"
    (root / "src" / "more.py").write_text("")
    assert verify(plan, result).outcome == "verification_failed"


@pytest.mark.parametrize(
    "path",
    ["../outside.txt", "src/../../outside.txt", "src/../other.txt", "/etc/passwd", "~/x", "src\\..\\x", "a\x00b"],
)
def test_fs_refuses_escapes_and_odd_paths(root, path):
    result = fs(fs_plan(allowed_paths=["**"]), {"operation": "read", "path": path}, root)
    assert result.failure.failure_class == "policy_violation"


def test_fs_refuses_a_symlink_that_leads_out_of_the_root(root, tmp_path_factory):
    outside = tmp_path_factory.mktemp("outside")
    (outside / "secret.txt").write_text("outside")
    os.symlink(outside / "secret.txt", root / "src" / "link.txt")
    os.symlink(outside, root / "src" / "linkdir")
    for path in ("src/link.txt", "src/linkdir/secret.txt"):
        result = fs(fs_plan(), {"operation": "read", "path": path}, root)
        assert result.failure.failure_class == "policy_violation"
        assert "outside the session's root" in result.failure.reason
    result = fs(fs_plan(), {"operation": "write", "path": "src/link.txt", "content": "pwned"}, root)
    assert result.failure.failure_class == "policy_violation"
    assert (outside / "secret.txt").read_text() == "outside"


def test_fs_refuses_a_symlink_into_a_denied_file(root):
    os.symlink(root / "src" / ".env", root / "src" / "config.txt")
    result = fs(fs_plan(), {"operation": "read", "path": "src/config.txt"}, root)
    assert result.failure == ("policy_violation", "path src/config.txt resolves to a path the action may not use")


def test_denied_paths_win_over_allowed_paths(root):
    plan = fs_plan(allowed_paths=["**"])
    for path in ("src/.env", "src/secrets/k.txt", "src/secrets"):
        result = fs(plan, {"operation": "read", "path": path}, root)
        assert result.failure == ("policy_violation", f"path {path} is denied for this action")
    assert fs(plan, {"operation": "read", "path": "other.txt"}, root).ok
    assert fs(fs_plan(), {"operation": "read", "path": "other.txt"}, root).failure == (
        "policy_violation",
        "path other.txt is not in the action's allowed paths",
    )


def test_fs_operations_must_be_declared(root):
    plan = fs_plan(allowed_operations=["read"])
    result = fs(plan, {"operation": "write", "path": "src/a.py", "content": "x"}, root)
    assert result.failure == ("policy_violation", "operation write (overwrite) is not allowed for this action")
    assert fs(plan, {"operation": "delete", "path": "src/app.py"}, root).failure.failure_class == "policy_violation"
    assert (root / "src" / "app.py").exists()
    # An operation whose side effect the manifest does not declare is refused too.
    undeclared = fs_plan(effects=["fs_read"], allowed_operations=["read", "write"])
    result = fs(undeclared, {"operation": "write", "path": "src/a.py", "content": "x"}, root)
    assert result.failure == ("policy_violation", "operation write (overwrite) is not allowed for this action")
    assert not (root / "src" / "a.py").exists()
    # LatchGate's write modes: create only.
    creator = fs_plan(allowed_operations=["create"])
    assert fs(creator, {"operation": "write", "path": "src/b.py", "content": "x", "mode": "create"}, root).ok
    assert not fs(creator, {"operation": "write", "path": "src/b.py", "content": "y"}, root).ok


def test_fs_delete_when_declared_and_verified(root):
    plan = fs_plan(allowed_operations=["delete"])
    result = fs(plan, {"operation": "delete", "path": "src/app.py"}, root)
    assert result.ok and not (root / "src" / "app.py").exists()
    assert result.effect_evidence[0]["operation"] == "delete"
    assert verify(plan, result).outcome == "verified"


def test_fs_max_file_bytes(root):
    plan = fs_plan(max_file_bytes=16)
    result = fs(plan, {"operation": "write", "path": "src/big.txt", "content": "x" * 17}, root)
    assert result.failure == ("policy_violation", "content exceeds max_file_bytes (16)")
    (root / "src" / "big.txt").write_text("y" * 17)
    assert fs(plan, {"operation": "read", "path": "src/big.txt"}, root).failure == (
        "policy_violation",
        "file exceeds max_file_bytes (16)",
    )


def test_fs_without_a_root_is_an_internal_error(root):
    result = dispatch(fs_plan(), {"operation": "read", "path": "src/app.py"}, ProviderContext())
    assert result.failure == ("internal_error", "the session has no usable fs_root")


# --- dispatch and verifiers ------------------------------------------------------------------


def test_unknown_provider_and_provider_bugs_are_internal_errors(target, monkeypatch):
    plan = replace(http_plan(target), provider_module_digest="builtin:database")
    assert dispatch(plan, {}, ProviderContext()).failure == ("internal_error", "the action names no known provider")

    def broken(plan, body, context):
        raise RuntimeError("bug")

    monkeypatch.setattr(http_api, "run", broken)
    result = dispatch(http_plan(target), {"url": f"{target.base}/json"}, ProviderContext())
    assert result.failure == ("internal_error", "the provider failed unexpectedly")


def http_result(status, body=None, observed=None):
    return ProviderResult(
        output={"status": status, "headers": {}, "body": body or {}},
        observed=tuple({"kind": "http", "status": s} for s in (observed or [status])),
    )


@pytest.mark.parametrize(
    ("config", "status", "outcome"),
    [
        (None, 200, "verified"),
        (None, 204, "verified"),
        (None, 302, "verification_failed"),
        ({"expected": [200, 201]}, 201, "verified"),
        ({"expected": [200, 201]}, 204, "verification_failed"),
        ({"expected_status": [404]}, 404, "verified"),
        ({"expected": "2xx"}, 299, "verified"),
        ({"expected": "4xx"}, 200, "verification_failed"),
        ({"expected": "200-204"}, 204, "verified"),
        ({"expected": {"min": 200, "max": 202}}, 203, "verification_failed"),
        ({"expected": ["2xx", 404]}, 404, "verified"),
        ({"expected": "lots"}, 200, "verification_failed"),
    ],
)
def test_http_status_verifier(target, config, status, outcome):
    plan = http_plan(target, verification_config=config)
    verification = verify(plan, http_result(status))
    assert verification.outcome == outcome
    if outcome == "verified":
        assert verification.to_wire() == {
            "status": "verified",
            "evidence": {"status_code": status, "host_corroborated": True},
        }


def test_http_status_verifier_checks_required_fields_and_the_hosts_observation(target):
    plan = http_plan(target, verification_config={"required_fields": ["id"]})
    assert verify(plan, http_result(201, {"id": 7})).outcome == "verified"
    missing = verify(plan, http_result(201, {"name": "x"}))
    assert missing.reason == "required field 'id' is missing from the response body"
    lying = verify(http_plan(target), http_result(200, observed=[500]))
    assert lying.to_wire() == {
        "status": "verification_failed",
        "reason": "the provider reported HTTP 200 but the host saw HTTP 500",
    }


def test_verifier_none_and_failed_providers(target):
    plan = http_plan(target, verifier_kind="none")
    ok = http_result(200)
    assert verify(plan, ok).outcome == "unverifiable_declared"
    assert verify(plan, ok).is_fully_successful(ok)
    failure = dispatch(http_plan(target), {"url": "https://elsewhere.example/"}, ProviderContext())
    verification = verify(http_plan(target), failure)
    assert verification.outcome == "provider_failed_before_verification"
    assert not verification.is_fully_successful(failure)
    assert verify(http_plan(target), ProviderResult(output={"body": "no status"})).outcome == "verification_failed"
