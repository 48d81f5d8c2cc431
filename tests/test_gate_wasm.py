"""WASM providers on wasmtime (envelopes/gate/providers/wasm.py) with the WAT modules of
tests/gate_wat.py."""

import json
import statistics
import time

import pytest

from envelopes.gate.plan import ExecutionPlan
from envelopes.gate.providers import ProviderContext, dispatch, verify, wasm
from tests import gate_wat
from tests.gate_target import Target


@pytest.fixture
def target():
    server = Target()
    yield server
    server.close()


def plan_for(wat, *, imports=("mandate.log",), domains=("127.0.0.1",), io=None, **limits):
    digest, data = gate_wat.compiled(wat)
    manifest = {
        "action_id": "wasm_action",
        "version": "1.0.0",
        "provider_module_digest": digest,
        "required_imports": list(imports),
        "resource_limits": {"fuel": 1_000_000, "memory_mb": 16, "timeout_seconds": 5, "max_io_calls": 10, **limits},
        "egress": {"profile": "proxy_allowlist", "allowed_domains": list(domains), "allowed_methods": ["GET"]},
        "verifier_kind": "http_status",
        "io": io or {},
    }
    return ExecutionPlan.from_manifest(manifest), ProviderContext(module_bytes={digest: data}.get, trace_id="trc_1")


def test_module_runs_with_the_request_and_its_output_is_the_result(caplog):
    plan, context = plan_for(gate_wat.ECHO)
    with caplog.at_level("INFO", logger="envelopes.gate.providers.wasm"):
        result = dispatch(plan, {"b": [1, 2], "a": "x"}, context)
    assert result.ok, result.failure
    # The module sees the RFC 8785 form of the body.
    assert result.output == {"echo": {"a": "x", "b": [1, 2]}}
    assert result.logs == ('{"a":"x","b":[1,2]}',)
    assert "trc_1" in caplog.text
    assert 0 < result.fuel_consumed < 1_000_000
    assert result.exit_code == 0
    assert result.runtime()["fuel_consumed"] == result.fuel_consumed


def test_module_is_compiled_once_per_digest():
    plan, _ = plan_for(gate_wat.EMPTY, imports=())
    _, data = gate_wat.compiled(gate_wat.EMPTY)
    asked = []

    def source(digest):
        asked.append(digest)
        return data

    before = wasm.runtime().compilations
    for _ in range(5):
        assert dispatch(plan, {}, ProviderContext(module_bytes=source)).output == {}
    assert asked == [plan.provider_module_digest]
    assert wasm.runtime().compilations == before + 1


def test_bytes_that_do_not_match_the_digest_are_not_run():
    plan, _ = plan_for(gate_wat.LOOP, imports=())
    _, other = gate_wat.compiled(gate_wat.FAIL)
    result = dispatch(plan, {}, ProviderContext(module_bytes=lambda digest: other))
    assert result.failure == ("internal_error", "the module's bytes do not match its digest")
    result = dispatch(plan, {}, ProviderContext())
    assert result.failure == ("internal_error", "the module's bytes are not available")


def test_fuel_exhaustion_ends_the_run():
    plan, context = plan_for(gate_wat.LOOP, imports=(), fuel=50_000)
    result = dispatch(plan, {}, context)
    assert result.failure == ("provider_error", "the module ran out of fuel")
    assert result.fuel_consumed == 50_000
    assert verify(plan, result).outcome == "provider_failed_before_verification"


def test_infinite_loop_ends_at_the_wall_clock_timeout():
    plan, context = plan_for(gate_wat.LOOP, imports=(), fuel=10**15, timeout_seconds=0.2)
    started = time.monotonic()
    result = dispatch(plan, {}, context)
    assert result.failure == ("timeout", "the module did not finish within timeout_seconds")
    assert result.normalized_result()["kind"] == "timeout"
    assert 0.15 < time.monotonic() - started < 1.0


def test_memory_limit():
    plan, context = plan_for(gate_wat.GROW, imports=(), memory_mb=16)
    result = dispatch(plan, {}, context)
    assert result.failure.failure_class == "provider_error"
    assert "unreachable" in result.failure.reason
    roomy, context = plan_for(gate_wat.GROW, imports=(), memory_mb=128)
    assert dispatch(roomy, {}, context).ok
    big, context = plan_for(gate_wat.BIG_MEMORY, imports=(), memory_mb=16)
    assert dispatch(big, {}, context).failure == ("provider_error", "the module needs more memory than memory_mb")


@pytest.mark.parametrize(
    ("wat", "imports", "named"),
    [
        (gate_wat.ECHO, (), "mandate.log"),
        (gate_wat.http_module(), ("mandate.log",), "mandate.http"),
        (gate_wat.WASI, ("mandate.log", "mandate.http"), "wasi_snapshot_preview1.fd_write"),
    ],
)
def test_undeclared_import_is_refused_at_instantiation(wat, imports, named):
    plan, context = plan_for(wat, imports=imports)
    result = dispatch(plan, {}, context)
    assert result.failure == (
        "policy_violation",
        f"the module imports {named}, which the action does not declare",
    )
    assert result.logs == ()


@pytest.mark.parametrize("spelling", ["mandate:log", "mandate.log", "latchgate:io/log"])
def test_every_spelling_of_a_declared_import_is_accepted(spelling):
    plan, context = plan_for(gate_wat.ECHO, imports=(spelling,))
    assert dispatch(plan, {"a": 1}, context).output == {"echo": {"a": 1}}


def test_module_http_goes_through_the_egress_guard(target):
    plan, context = plan_for(gate_wat.http_module(), imports=("mandate.http",))
    result = dispatch(plan, {"method": "GET", "url": f"{target.base}/json"}, context)
    assert result.ok, result.failure
    assert result.output["status"] == 200
    assert json.loads(result.output["body"]) == {"ok": True, "path": "/json", "query": {}}
    assert result.effect_evidence == ({"method": "GET", "host": "127.0.0.1", "status": 200},)
    verification = verify(plan, result)
    assert verification.evidence == {"status_code": 200, "host_corroborated": True}


def test_module_http_refusals_end_the_run(target):
    plan, context = plan_for(gate_wat.http_module(), imports=("mandate.http",))
    refused = dispatch(plan, {"method": "GET", "url": "https://elsewhere.example/"}, context)
    assert refused.failure == ("policy_violation", "domain elsewhere.example is not allowed for this action")
    method = dispatch(plan, {"method": "DELETE", "url": f"{target.base}/json"}, context)
    assert method.failure == ("policy_violation", "method DELETE is not allowed for this action")
    assert target.seen == []


def test_module_http_connection_failure_is_an_answer_the_module_sees():
    plan, context = plan_for(gate_wat.http_module(), imports=("mandate.http",))
    result = dispatch(plan, {"method": "GET", "url": "http://127.0.0.1:9/"}, context)
    assert result.ok
    assert result.output == {"error": "the call to 127.0.0.1 failed (could not connect: connection refused)"}


def test_max_io_calls(target):
    plan, context = plan_for(gate_wat.http_module(times=3), imports=("mandate.http",), max_io_calls=2)
    result = dispatch(plan, {"method": "GET", "url": f"{target.base}/json"}, context)
    assert result.failure == ("policy_violation", "the module exceeded max_io_calls (2)")
    assert len(target.seen) == 2


def test_module_http_shares_the_actions_deadline(target):
    plan, context = plan_for(gate_wat.http_module(), imports=("mandate.http",), timeout_seconds=0.3)
    started = time.monotonic()
    result = dispatch(plan, {"method": "GET", "url": f"{target.base}/slow?s=2"}, context)
    assert result.failure.failure_class == "timeout"
    assert time.monotonic() - started < 1.0


@pytest.mark.parametrize(
    ("wat", "failure"),
    [
        (gate_wat.FAIL, ("provider_error", "the module returned error -7")),
        (gate_wat.NOT_JSON, ("provider_error", "the module's output is not UTF-8 JSON")),
        (gate_wat.NO_ALLOC, ("provider_error", "the module does not export alloc with the ABI's type")),
    ],
)
def test_module_failures_are_results(wat, failure):
    plan, context = plan_for(wat, imports=())
    result = dispatch(plan, {}, context)
    assert result.failure == failure
    if wat is gate_wat.FAIL:
        assert result.exit_code == -7


def test_output_larger_than_max_response_bytes_is_refused():
    plan, context = plan_for(gate_wat.ECHO, io={"max_response_bytes": 64})
    result = dispatch(plan, {"text": "x" * 100}, context)
    assert result.failure == ("policy_violation", "the module's output exceeds max_response_bytes (64)")


def test_each_call_starts_from_a_fresh_instance():
    # The bump allocator's pointer lives in a global: a reused instance would hand out new addresses.
    plan, context = plan_for(gate_wat.ECHO)
    first = dispatch(plan, {"n": 1}, context)
    second = dispatch(plan, {"n": 1}, context)
    assert first.output == second.output and first.fuel_consumed == second.fuel_consumed


def test_instantiation_and_a_trivial_call_take_under_two_milliseconds():
    plan, context = plan_for(gate_wat.EMPTY, imports=())
    dispatch(plan, {}, context)  # compiled and linked once
    timings = []
    for _ in range(200):
        started = time.perf_counter()
        assert dispatch(plan, {"a": 1}, context).ok
        timings.append(time.perf_counter() - started)
    assert statistics.median(timings) < 0.002
