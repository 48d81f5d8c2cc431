"""Benchmark: the action gate's providers on their own (issue 12, "Performance").

The gate's target is ≥ 600 executions/s of a ``builtin:http_api`` action against a local
HTTP target (the whole pipeline); this measures what the provider layer costs of that
budget, and the WASM target (per-call instantiation + a trivial call ≤ 2 ms):

1. **http overhead**: one thread, a keep-alive target in its own process (a small asyncio
   HTTP/1.1 server answering a fixed JSON body). Per call: a bare pooled ``httpx.Client``
   GET (the floor), ``egress.send`` (vet, resolve, pin, deadline, cap) and ``dispatch`` of
   an ``http_fetch``-like plan (template, output, evidence). The differences are the
   guard's and the provider's overhead.
2. **http throughput**: ``dispatch`` from ``--threads`` threads (16 agents) for
   ``--seconds``: calls/s and p50/p99 latency.
3. **wasm**: ``dispatch`` of a module that answers ``{}`` (compiled once): per-call
   instantiation + call, median and p99.

No database is used. Usage:

    .venv/bin/python bench/gate_providers.py [--calls 3000] [--threads 16] [--seconds 5]
"""

import argparse
import datetime
import os
import platform
import statistics
import sys
import threading
import time

import loadkit  # puts the repository root on sys.path

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "governance.settings")
os.environ.setdefault("SECRET_KEY", "bench")
os.environ["MANDATE_EGRESS_ALLOW_PRIVATE"] = "true"

import django  # noqa: E402

django.setup()

import hashlib  # noqa: E402

import httpx  # noqa: E402
import wasmtime  # noqa: E402

from envelopes.gate.plan import ExecutionPlan  # noqa: E402
from envelopes.gate.providers import ProviderContext, dispatch, egress  # noqa: E402


def percentile(values, p):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p))]


def per_call(fn, calls: int) -> list[float]:
    for _ in range(min(200, calls)):
        fn()
    timings = []
    for _ in range(calls):
        started = time.perf_counter()
        fn()
        timings.append(time.perf_counter() - started)
    return timings


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--threads", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()

    server, port = loadkit.start_target(use_uvloop=False, method="fork")
    url = f"http://127.0.0.1:{port}/items"
    plan = ExecutionPlan.from_manifest(
        {
            "action_id": "http_fetch",
            "version": "1.0.0",
            "provider_module_digest": "builtin:http_api",
            "template": {"method": "GET", "url_template": "{{url}}", "headers": {"Accept": "application/json"}},
            "egress": {"profile": "proxy_allowlist", "allowed_domains": ["127.0.0.1"]},
            "declared_side_effects": ["http_read"],
            "verifier_kind": "http_status",
        }
    )
    rules = egress.EgressRules.for_plan(plan)
    context = ProviderContext()
    rows = []
    try:
        bare = httpx.Client(trust_env=False)
        floor = per_call(lambda: bare.get(url).content, args.calls)
        guarded = per_call(lambda: egress.send(rules, "GET", url), args.calls)
        provider = per_call(lambda: dispatch(plan, {"url": url}, context), args.calls)
        for name, timings in (("bare httpx GET", floor), ("egress.send", guarded), ("dispatch http_api", provider)):
            rows.append(
                (
                    name,
                    f"{statistics.median(timings) * 1000:.3f}",
                    f"{percentile(timings, 0.99) * 1000:.3f}",
                    f"{(statistics.median(timings) - statistics.median(floor)) * 1000:+.3f}",
                )
            )

        latencies, stop = [], time.monotonic() + args.seconds
        lock = threading.Lock()

        def agent():
            mine = []
            while time.monotonic() < stop:
                started = time.perf_counter()
                result = dispatch(plan, {"url": url}, context)
                mine.append(time.perf_counter() - started)
                assert result.ok, result.failure
            with lock:
                latencies.extend(mine)

        threads = [threading.Thread(target=agent) for _ in range(args.threads)]
        began = time.monotonic()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        elapsed = time.monotonic() - began
        throughput = (len(latencies) / elapsed, percentile(latencies, 0.5), percentile(latencies, 0.99))

        wat = """(module (memory (export "memory") 1) (data (i32.const 0) "{}")
          (global $top (mut i32) (i32.const 1024))
          (func (export "alloc") (param $n i32) (result i32) (local $p i32)
            (local.set $p (global.get $top))
            (global.set $top (i32.add (global.get $top) (local.get $n)))
            (local.get $p))
          (func (export "run") (param i32 i32) (result i64) (i64.const 2)))"""
        data = bytes(wasmtime.wat2wasm(wat))
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        wasm_plan = ExecutionPlan.from_manifest(
            {"action_id": "wasm_empty", "version": "1", "provider_module_digest": digest, "verifier_kind": "none"}
        )
        wasm_context = ProviderContext(module_bytes=lambda _digest: data)
        wasm = per_call(lambda: dispatch(wasm_plan, {"a": 1}, wasm_context), args.calls)
    finally:
        server.terminate()

    print(f"# Gate providers — {datetime.date.today()} — {platform.node()}, {os.cpu_count()} CPUs, Python")
    print(f"{platform.python_version()}, httpx {httpx.__version__}\n")
    print("| per call (1 thread) | median ms | p99 ms | over bare httpx |")
    print("|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    print(f"\n| dispatch http_api, {args.threads} threads | calls/s | p50 ms | p99 ms |")
    print("|---|---|---|---|")
    print(f"| {args.seconds:g} s | {throughput[0]:.0f} | {throughput[1] * 1000:.2f} | {throughput[2] * 1000:.2f} |")
    print("\n| wasm: fresh instance + trivial call | median ms | p99 ms |")
    print("|---|---|---|")
    print(f"| dispatch | {statistics.median(wasm) * 1000:.3f} | {percentile(wasm, 0.99) * 1000:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
