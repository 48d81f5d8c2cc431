"""Benchmark: ``POST /v1/actions/{action_id}/execute`` over HTTP (issue 12, "Performance").

Target: ≥ 600 executions/s with p99 ≤ 50 ms at 16 concurrent agents, each with its own lease
and a fresh DPoP proof per call, of a ``builtin:http_api`` action against a local HTTP target,
on PostgreSQL, through the hot path (group commit for the evidence).

What the script does:

1. migrates the database in ``DATABASE_URL`` (PostgreSQL on loopback; ``--fresh`` drops and
   recreates it first), writes a catalogue (the shipped manifests plus ``bench_fetch``: the
   shipped ``http_fetch`` allowed to reach 127.0.0.1, low risk, verifier ``http_status``) to
   ``var/gate_execute-actions``, reloads it, grants ``bench_fetch`` to the agents
   ``agent-bench-00`` … and makes a platform operator's API token (who asks for the leases);
2. starts a keep-alive HTTP/1.1 target in its own process (asyncio, a fixed small JSON
   answer) and the real server (``uvicorn governance.asgi:application``, ``--workers`` N,
   uvloop + httptools, DEBUG off, LOG_LEVEL=WARNING, no access log) with
   ``PUBLIC_BASE_URL`` = its own URL and ``MANDATE_EGRESS_ALLOW_PRIVATE=true``;
3. asks the server for one lease per agent (``POST /v1/leases``, each agent its own P-256
   DPoP key), then per run: warms up, and drives a closed loop of ``--concurrency`` agents
   for ``--duration`` seconds from ``--client-processes`` processes — each agent one
   keep-alive connection, each call a fresh proof (new ``jti``, ``iat`` now, ``ath`` of its
   lease) signed in the client process just before it is sent, and a body
   ``{"url": "http://127.0.0.1:<target>/items/<n>"}``. Any answer but a 200 whose
   ``verification_outcome`` is ``verified`` is an error;
4. reports executions/s, p50/p95/p99/max, errors by status and code, CPU during the measured
   window (clients, server, PostgreSQL backends, target, machine) and the server's CPU per
   call, and executions per database commit (the group commit's sharing);
5. checks every 200 left its evidence: receipts and execution rows (and ``GATE_ACTION_CALL``
   ledger events) grew by the number of 200s, and a sample of receipts verifies.

On a 2-core machine the clients (proof signing, HTTP), the target, the server and PostgreSQL
share the two cores; the clients' and target's CPU is reported so it can be subtracted.

``--breakdown N`` times each pipeline step of N in-process calls (``drive``, each call
committing alone); ``--py-spy PATH`` samples the server workers during the first run.

Usage:

    createdb -h 127.0.0.1 -U postgres h_gatebench
    DATABASE_URL=postgres://postgres@127.0.0.1:5432/h_gatebench SECRET_KEY=bench \\
        .venv/bin/python bench/gate_execute.py [--workers 2] [--concurrency 16] [--duration 20] \\
        [--repeat 2] [--sweep 1,2] [--client-processes 1] [--breakdown 500] [--py-spy PATH]

Exit status: 0 when every run had no errors and the evidence checks passed (and, with
``--strict``, the target was met).
"""

import argparse
import asyncio
import base64
import hashlib
import json
import multiprocessing
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from contextlib import suppress
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import evaluate_load as shared  # noqa: E402  (server process, CPU accounting, py-spy, machine line)

THROUGHPUT_TARGET = 600.0
P99_TARGET_MS = 50.0
ACTION = "bench_fetch"
AGENT = "agent-bench-{:02d}"
EXECUTE_PATH = f"/v1/actions/{ACTION}/execute"
ACTIONS_DIR = ROOT / "var" / "gate_execute-actions"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/5"
CONNECT_STAGGER = 0.02  # seconds between the agents' connects


# --- the local target (its own process) ---------------------------------------------------

TARGET_BODY = b'{"ok":true,"items":[1,2,3]}'
TARGET_RESPONSE = (
    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
    + str(len(TARGET_BODY)).encode()
    + b"\r\n\r\n"
    + TARGET_BODY
)


def target_main(port_pipe) -> None:
    """A keep-alive HTTP/1.1 server answering every request with a small JSON body."""
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass

    async def handle(reader, writer):
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                if length:
                    await reader.readexactly(length)
                writer.write(TARGET_RESPONSE)
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
            writer.close()

    async def serve():
        server = await asyncio.start_server(handle, "127.0.0.1", 0, backlog=1024)
        port_pipe.send(server.sockets[0].getsockname()[1])
        async with server:
            await server.serve_forever()

    asyncio.run(serve())


def start_target() -> tuple[multiprocessing.Process, int]:
    context = multiprocessing.get_context("spawn")
    parent, child = context.Pipe()
    process = context.Process(target=target_main, args=(child,), daemon=True)
    process.start()
    if not parent.poll(30):
        raise RuntimeError("the target did not start")
    return process, parent.recv()


# --- environment, database, catalogue --------------------------------------------------------


def server_env(public_base_url: str = "") -> dict[str, str]:
    env = os.environ.copy()
    env.setdefault("SECRET_KEY", "bench")
    env.setdefault("REDIS_URL", DEFAULT_REDIS_URL)
    env["DEBUG"] = "false"
    env["LOG_LEVEL"] = "WARNING"
    env["DJANGO_SETTINGS_MODULE"] = "governance.settings"
    env["MANDATE_ACTIONS_DIR"] = str(ACTIONS_DIR)
    env["MANDATE_EGRESS_ALLOW_PRIVATE"] = "true"
    env["MANDATE_GATE_LEASE_TTL_SECONDS"] = "3600"
    if public_base_url:
        env["PUBLIC_BASE_URL"] = public_base_url
    return env


def write_catalogue() -> None:
    """The shipped manifests plus ``bench_fetch`` (``http_fetch`` allowed to reach 127.0.0.1)."""
    import yaml

    shipped = ROOT / "controlplane" / "gate" / "actions"
    shutil.rmtree(ACTIONS_DIR, ignore_errors=True)
    shutil.copytree(shipped, ACTIONS_DIR)
    manifest = yaml.safe_load((shipped / "http_fetch.yaml").read_text())
    manifest.update(action_id=ACTION, description="GET a local URL (bench/gate_execute.py)")
    manifest["egress"] = {"profile": "proxy_allowlist", "allowed_domains": ["127.0.0.1"]}
    (ACTIONS_DIR / f"{ACTION}.yaml").write_text(yaml.safe_dump(manifest, sort_keys=False))


def setup_django() -> None:
    for key, value in server_env().items():
        os.environ.setdefault(key, value)
    os.environ["DEBUG"] = "false"
    os.environ["MANDATE_ACTIONS_DIR"] = str(ACTIONS_DIR)
    import django

    django.setup()


def prepare_database(agents: int) -> str:
    """Migrate, load the catalogue, grant the agents; return a platform operator's token."""
    from django.core.management import call_command

    from controlplane.gate import acl, audit
    from controlplane.gate.registry import reload
    from governance.choices import Role
    from governance.models import Person
    from governance.services.people import create_person, ensure_organization
    from governance.services.tokens import issue_token

    start = time.perf_counter()
    call_command("migrate", verbosity=0)
    reload()
    for index in range(agents):
        acl.grant(AGENT.format(index), [ACTION], actor=audit.SYSTEM)
    organization = ensure_organization("bench-gate", "Gate benchmark")
    person = Person.objects.filter(username="bench-gate-operator").first() or create_person(
        organization, "bench-gate-operator", roles=[Role.PLATFORM_OPERATOR]
    )
    _, secret = issue_token(person, "bench gate", [Role.PLATFORM_OPERATOR])
    print(f"database ready (migrate, catalogue, {agents} agents granted, token) in {time.perf_counter() - start:.1f} s")
    return secret


class Server(shared.Server):
    """The real server with ``PUBLIC_BASE_URL`` set to its own URL, run from ``root`` (another
    checkout of the code, to compare before and after on one database)."""

    def __init__(self, workers: int, root: Path = ROOT):
        super().__init__(workers)
        self.root = root

    def start(self, timeout: float = 60.0) -> None:
        original_env, original_root = shared.server_env, shared.ROOT
        shared.server_env, shared.ROOT = (lambda: server_env(self.url)), self.root
        try:
            super().start(timeout)
        finally:
            shared.server_env, shared.ROOT = original_env, original_root


# --- DPoP keys and proofs (the clients' side) ----------------------------------------------


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


class Agent:
    """One agent's P-256 key, its lease, and fresh proofs for its calls (as LatchGate's SDKs
    make them: UUID4 ``jti``, integer ``iat``, ``htu`` = PUBLIC_BASE_URL + path, ``ath``)."""

    def __init__(self, pem: bytes | None = None):
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ec

        if pem is None:
            self.private = ec.generate_private_key(ec.SECP256R1())
        else:
            self.private = serialization.load_pem_private_key(pem, password=None)
        numbers = self.private.public_key().public_numbers()
        self.jwk = {
            "kty": "EC",
            "crv": "P-256",
            "x": b64url(numbers.x.to_bytes(32, "big")),
            "y": b64url(numbers.y.to_bytes(32, "big")),
        }
        self.lease = ""
        self._header = b64url(json.dumps({"typ": "dpop+jwt", "alg": "ES256", "jwk": self.jwk}).encode())

    def pem(self) -> bytes:
        from cryptography.hazmat.primitives import serialization

        return self.private.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )

    def proof(self, method: str, htu: str) -> str:
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

        claims = {
            "jti": str(uuid.uuid4()),
            "htm": method,
            "htu": htu,
            "iat": int(time.time()),
            "ath": b64url(hashlib.sha256(self.lease.encode("ascii")).digest()),
        }
        signing_input = f"{self._header}.{b64url(json.dumps(claims, separators=(',', ':')).encode())}"
        r, s = decode_dss_signature(self.private.sign(signing_input.encode("ascii"), ec.ECDSA(hashes.SHA256())))
        return f"{signing_input}.{b64url(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"


def issue_leases(url: str, token: str, count: int, max_calls: int = 0) -> list[tuple[bytes, str]]:
    """One lease per agent from ``POST /v1/leases`` (at most 50/s: the issuance rate limit),
    with a call budget when ``max_calls`` (as LatchGate's SDKs send)."""
    import httpx

    leases = []
    with httpx.Client(base_url=url, timeout=30.0) as client:
        for index in range(count):
            agent = Agent()
            body = {"scopes": ["tools:call"], "dpop_jwk": agent.jwk, "agent_id": AGENT.format(index)}
            if max_calls:
                body["budgets"] = {"max_calls": max_calls, "max_cost_usd_cents": 0}
            for _ in range(20):
                response = client.post("/v1/leases", json=body, headers={"Authorization": f"Bearer {token}"})
                if response.status_code != 429:
                    break
                time.sleep(0.1)
            if response.status_code != 200:
                raise RuntimeError(f"POST /v1/leases: {response.status_code} {response.text[:300]}")
            leases.append((agent.pem(), response.json()["lease_jwt"]))
    return leases


# --- the load clients (their own processes) -------------------------------------------------


async def _agent_loop(agent, host, port, htu, target, tag, connect_at, window, latencies, outcomes):
    head = (
        f"POST {EXECUTE_PATH} HTTP/1.1\r\nHost: {host}:{port}\r\nAuthorization: DPoP {agent.lease}\r\n"
        "Content-Type: application/json\r\nConnection: keep-alive\r\n"
    ).encode()
    await asyncio.sleep(max(0.0, connect_at - time.time()))
    reader, writer = await asyncio.open_connection(host, port)
    await window["go"].wait()
    sequence = 0
    while time.perf_counter() < window["deadline"]:
        if writer is None:
            reader, writer = await asyncio.open_connection(host, port)
        sequence += 1
        body = json.dumps({"url": f"{target}/items/{tag}-{sequence}"}).encode()
        start = time.perf_counter()
        try:
            proof = agent.proof("POST", htu).encode("ascii")
            writer.write(head + b"DPoP: " + proof + b"\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n")
            writer.write(body)
            status = int((await reader.readline()).split()[1])
            length, close = None, False
            while True:
                line = await reader.readline()
                if line in (b"\r\n", b""):
                    break
                name, _, value = line.partition(b":")
                name = name.strip().lower()
                if name == b"content-length":
                    length = int(value)
                elif name == b"connection" and value.strip().lower() == b"close":
                    close = True
            if length is None:
                raise ValueError("response without Content-Length")
            answer = json.loads(await reader.readexactly(length))
            latencies.append(time.perf_counter() - start)
            if status == 200 and answer.get("verification_outcome") == "verified":
                outcomes["ok"] += 1
            else:
                outcomes[f"{status} {answer.get('error') or answer.get('verification_outcome')}"] += 1
            if close:
                writer.close()
                writer = None
        except (OSError, ValueError, IndexError, asyncio.IncompleteReadError) as exc:
            latencies.append(time.perf_counter() - start)
            outcomes[type(exc).__name__] += 1
            if writer is not None:
                writer.close()
            writer = None
    if writer is not None:
        writer.close()


async def _drive(agents, server_url, target, seconds, run_tag, connect_at, start_at):
    from urllib.parse import urlparse

    parsed = urlparse(server_url)
    htu = server_url + EXECUTE_PATH
    window = {"go": asyncio.Event(), "deadline": 0.0}
    latencies: list[float] = []
    outcomes: Counter = Counter()
    tasks = [
        asyncio.create_task(
            _agent_loop(
                agent, parsed.hostname, parsed.port, htu, target, f"{run_tag}-{i}", at, window, latencies, outcomes
            )
        )
        for i, (agent, at) in enumerate(zip(agents, connect_at, strict=True))
    ]
    await asyncio.sleep(max(0.0, start_at - time.time()))
    began = time.perf_counter()
    window["deadline"] = began + seconds
    window["go"].set()
    crashed = await asyncio.gather(*tasks, return_exceptions=True)
    for outcome in crashed:
        if isinstance(outcome, BaseException):
            outcomes[f"client crashed: {outcome!r}"[:120]] += 1
    return latencies, outcomes, began, time.perf_counter()


def client_process(leases, server_url, target, seconds, run_tag, start_at, queue):
    """One load process: an agent per lease, one keep-alive connection each."""
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    agents = []
    for pem, lease, _ in leases:
        agent = Agent(pem)
        agent.lease = lease
        agents.append(agent)
    cpu_start = time.process_time()
    latencies, outcomes, began, ended = asyncio.run(
        _drive(agents, server_url, target, seconds, run_tag, [at for _, _, at in leases], start_at)
    )
    queue.put(
        {
            "latencies": latencies,
            "outcomes": dict(outcomes),
            "wall": ended - began,
            "cpu": time.process_time() - cpu_start,
        }
    )


def run_load(leases, server_url, target, seconds, processes, run_tag, meter=None, target_pid=None) -> dict:
    """The agents in ``processes`` processes; they connect ``CONNECT_STAGGER`` s apart (a burst of
    connects lands on one uvicorn worker), then load together for ``seconds``."""
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    connect_base = time.time() + 2.0  # spawned interpreters import first
    timed = [(pem, lease, connect_base + i * CONNECT_STAGGER) for i, (pem, lease) in enumerate(leases)]
    shares = [timed[i::processes] for i in range(processes)]
    start_at = connect_base + len(leases) * CONNECT_STAGGER + 0.3
    workers = [
        context.Process(
            target=client_process,
            args=(share, server_url, target, seconds, f"{run_tag}-p{i}", start_at, queue),
        )
        for i, share in enumerate(shares)
        if share
    ]
    for worker in workers:
        worker.start()
    try:
        time.sleep(max(0.0, start_at - time.time()))
        before = meter.snapshot() if meter else None
        system_before = system_cpu(meter.server.pids()) if meter else {}
        target_before = shared.process_cpu(target_pid) if target_pid else 0.0
        results = [queue.get(timeout=seconds + 120) for _ in workers]
        after = meter.snapshot() if meter else None
        system_after = system_cpu(meter.server.pids()) if meter else {}
        target_after = shared.process_cpu(target_pid) if target_pid else 0.0
    finally:
        for worker in workers:
            worker.join(timeout=5)
            if worker.is_alive():
                worker.terminate()
    latencies = sorted(latency for result in results for latency in result["latencies"])
    outcomes: Counter = Counter()
    for result in results:
        outcomes.update(result["outcomes"])
    wall = max(result["wall"] for result in results)
    row = {
        "requests": len(latencies),
        "ok": outcomes.pop("ok", 0),
        "errors": sum(outcomes.values()),
        "error_kinds": dict(outcomes.most_common(6)),
        "wall": wall,
        "rps": len(latencies) / wall if wall else 0.0,
        **percentiles(latencies),
    }
    if meter:
        span = after["at"] - before["at"]
        server_seconds = shared.CpuMeter.used(before, after, "server")
        row.update(
            server_cpu=server_seconds / span,
            server_ms_per_call=server_seconds / row["requests"] * 1000 if row["requests"] else 0.0,
            per_process=sorted((cpu - before["server"].get(pid, 0.0)) / span for pid, cpu in after["server"].items()),
            server_system_share=sum(v - system_before.get(pid, 0.0) for pid, v in system_after.items()) / server_seconds
            if server_seconds
            else 0.0,
            postgres_cpu=shared.CpuMeter.used(before, after, "postgres") / span,
            postgres_ms_per_call=shared.CpuMeter.used(before, after, "postgres") / row["requests"] * 1000
            if row["requests"]
            else 0.0,
            machine_cpu=(after["busy"] - before["busy"]) / span,
            client_cpu=sum(result["cpu"] for result in results) / wall if wall else 0.0,
            target_cpu=(target_after - target_before) / span,
            commits=after["commits"] - before["commits"],
        )
    return row


def system_cpu(pids: list[int]) -> dict[int, float]:
    """Kernel CPU seconds of each process (thread hand-offs and sockets show up here)."""
    seconds = {}
    for pid in pids:
        fields = shared._stat_fields(pid)
        if fields:
            seconds[pid] = int(fields[12]) / shared.CLOCK_TICKS
    return seconds


def percentiles(latencies: list[float]) -> dict:
    if not latencies:
        return {"p50": 0.0, "p95": 0.0, "p99": 0.0, "max": 0.0}

    def at(q: float) -> float:
        return latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000

    return {"p50": at(0.50), "p95": at(0.95), "p99": at(0.99), "max": latencies[-1] * 1000}


# --- evidence checks ------------------------------------------------------------------------


def evidence_counts() -> dict:
    from django.db import connection

    from envelopes.models import GateExecution
    from evidence.models import AuditEvent, Receipt

    counts = {
        "receipts": Receipt.objects.count(),
        "executions": GateExecution.objects.count(),
        "events": AuditEvent.objects.filter(event_type="GATE_ACTION_CALL", payload__decision="allow").count(),
    }
    connection.close()
    return counts


def check_evidence(before: dict, after: dict, ok: int, sample: int = 20) -> list[str]:
    """Every 200 left a receipt, an execution row and a ledger event; a sample verifies."""
    from evidence.models import Receipt
    from evidence.services.receipts import verify_receipt

    problems = [
        f"{name}: +{after[name] - before[name]} for {ok} executions"
        for name in ("receipts", "executions", "events")
        if after[name] - before[name] != ok
    ]
    for receipt in Receipt.objects.order_by("-receipt_id")[:sample]:
        status = verify_receipt(receipt)
        if status != "verified":
            problems.append(f"receipt {receipt.receipt_id}: {status}")
    return problems


# --- in-process: the pipeline's steps -------------------------------------------------------


def stage_breakdown(count: int, target: str, profile: bool = False) -> None:
    """Where one execution's time goes, step by step: ``count`` calls driven in this process
    through ``governance.hotpath.drive`` (the Django view's way: each call committing alone)."""
    from django.conf import settings
    from django.db import connection

    import envelopes.gate.steps.admission as admission
    import envelopes.gate.steps.dispatching as dispatching
    import envelopes.gate.steps.recording as recording
    import envelopes.gate.steps.request as request_step
    import envelopes.gate.steps.targets as targets
    from envelopes.gate.api.execute import EXECUTE
    from governance.choices import Role
    from governance.gate.leases import LeaseIdentity, issue_lease
    from governance.hotpath import HotRequest, drive
    from governance.services.people import ensure_organization

    agent = Agent()
    organization = ensure_organization("bench-gate", "Gate benchmark")
    identity = LeaseIdentity("token", "bench", str(organization.pk), frozenset({Role.PLATFORM_OPERATOR}))
    issued = issue_lease(scopes=["tools:call"], dpop_jwk=agent.jwk, agent_id=AGENT.format(0), identity=identity)
    agent.lease = issued.lease_jwt
    htu = settings.PUBLIC_BASE_URL + EXECUTE_PATH

    def call(n: int):
        body = json.dumps({"url": f"{target}/items/stage-{n}"}).encode()
        headers = {
            "authorization": f"DPoP {agent.lease}",
            "dpop": agent.proof("POST", htu),
            "content-type": "application/json",
        }
        return drive(ROUTE, HotRequest("POST", EXECUTE_PATH, {"action_id": ACTION}, headers, body))

    # the route's recorder, looked up when called (so the timer below sees it)
    ROUTE = replace(EXECUTE, record=lambda items: recording.record_evidence(items))
    for n in range(50):
        status, answer = call(n)
        assert status == 200, answer
    timer = shared.StageTimer()
    stages = [
        (admission, "rate_limit", "1 rate limit"),
        (admission, "drain", "2 drain (gate state)"),
        (admission, "authenticate", "3 lease + DPoP (+ replay check)"),
        (admission, "look_up", "4 action lookup"),
        (admission, "trust", "5 trust"),
        (request_step, "read_body", "6 body, schema, request hash"),
        (targets, "resolve_targets", "7 targets (plan)"),
        (dispatching, "budget_snapshot", "8 budget snapshot"),
        (dispatching, "policy", "9 policy"),
        (dispatching, "debit", "11 debit"),
        (dispatching, "grant", "12 grant (signed)"),
        (dispatching, "dispatch", "13 dispatch (HTTP to the target)"),
        (dispatching, "check_response", "14 response schema"),
        (dispatching, "verify", "15 verifier"),
        (recording, "execution_evidence", "16 evidence prepared (receipt signed, event hashed)"),
        (recording, "record_evidence", "16 evidence written (one transaction)"),
    ]
    for owner, attribute, label in stages:
        timer.wrap(owner, attribute, label)
    wall, cpu = time.perf_counter(), time.thread_time()
    try:
        for n in range(count):
            status, answer = call(1000 + n)
            assert status == 200, answer
    finally:
        wall, cpu = time.perf_counter() - wall, time.thread_time() - cpu
        timer.unwrap()
    if profile:
        import cProfile
        import io
        import pstats

        profiler = cProfile.Profile()
        profiler.enable()
        for n in range(count):
            call(5000 + n)
        profiler.disable()
        for order in ("tottime", "cumulative"):
            out = io.StringIO()
            pstats.Stats(profiler, stream=out).sort_stats(order).print_stats(40)
            print(f"\ncProfile of {count} in-process calls, by {order}:\n```\n{out.getvalue().strip()}\n```")
    proof_cost = time.perf_counter()
    for _ in range(count):
        agent.proof("POST", htu)
    proof_cost = (time.perf_counter() - proof_cost) / count
    connection.close()
    print(f"\nStep breakdown of {count} in-process executions (ms per call; CPU is this thread's; one thread):")
    print("\n| Step | Wall ms | CPU ms |")
    print("|---|---:|---:|")
    print(
        f"| whole call (`drive`, proof made in the loop: {proof_cost * 1000:.2f} ms) "
        f"| {wall / count * 1000:.2f} | {cpu / count * 1000:.2f} |"
    )
    for label, (stage_wall, stage_cpu, _calls) in timer.totals.items():
        print(f"| {label} | {stage_wall / count * 1000:.2f} | {stage_cpu / count * 1000:.2f} |")


# --- py-spy: where the server's time goes -------------------------------------------------

# Functions whose inclusive share of the server's samples says what each part costs.
PARTS = [
    ("uvicorn: HTTP parsing, ASGI, responses (outside the hot path)", None),
    ("hot path: admission, body, answer (HotPath._route)", "HotPath._route"),
    ("  the pipeline on the event loop (drive_async, Cached steps included)", "drive_async"),
    ("  3 lease + DPoP + replay check (thread)", "authenticate"),
    ("  13 dispatch (thread)", "dispatch (envelopes/gate/steps/dispatching.py)"),
    ("  16 evidence prepared (receipt signed, event hashed)", "execution_evidence"),
    ("  16 evidence written (group commit's writer thread)", "record_evidence"),
    ("  handing steps to threads (ThreadPoolExecutor.submit)", "ThreadPoolExecutor.submit"),
    ("pool threads, all (steps and the executor's own code)", "_worker"),
    ("the group commit's writer thread, all", "GroupCommit._run"),
]


def report_py_spy(recorders) -> None:
    """Inclusive shares of the pipeline's parts, then the hottest functions (self)."""
    own: Counter = Counter()
    inclusive: Counter = Counter()
    total = 0
    for process, output in recorders:
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
        if not output.exists():
            print(f"py-spy wrote nothing for {output.name} (ptrace not permitted?)")
            continue
        for line in output.read_text().splitlines():
            stack, _, count = line.rpartition(" ")
            if not stack or not count.isdigit():
                continue
            samples = int(count)
            total += samples
            frames = [shared._function_of(frame) for frame in stack.split(";")]
            own[frames[-1]] += samples
            for frame in set(frames):
                inclusive[frame] += samples
        print(f"py-spy's raw stacks: {output}")
    if not total:
        return

    def share(name: str) -> float:
        return sum(n for frame, n in inclusive.items() if frame == name or frame.startswith(name + " (")) / total

    print(f"\npy-spy (GIL holder only): {total:,} samples of busy server threads")
    print("\n| Part | Share of server samples |\n|---|---:|")
    for label, name in PARTS:
        outside = 1.0 - share("HotPath._route") - share("_worker") - share("GroupCommit._run")
        value = outside if name is None else share(name)
        print(f"| {label} | {value * 100:.1f}% |")
    print("\nTop 25 functions by self samples:")
    for frame, samples in own.most_common(25):
        print(f"  {samples / total * 100:5.1f}%  {frame}")


# --- runs -------------------------------------------------------------------------------------


def measure_configuration(args, token: str, workers: int, target: str, target_pid: int) -> list[dict]:
    database_url = os.environ["DATABASE_URL"]
    server = Server(workers, Path(args.server_root).resolve() if args.server_root else ROOT)
    rows = []
    try:
        server.start()
        leases = issue_leases(server.url, token, args.concurrency, args.budget)
        meter = shared.CpuMeter(server, database_url)
        for run in range(1, args.repeat + 1):
            load = os.getloadavg()[0]
            tag = f"w{workers}r{run}-{uuid.uuid4().hex[:6]}"
            before = evidence_counts()
            warm = run_load(leases, server.url, target, args.warmup, args.client_processes, tag)
            if warm["ok"] == 0:
                raise RuntimeError(f"warm-up failed: {warm['error_kinds']}\n{server.output()}")
            recorders = []
            if args.py_spy and run == 1:
                pids = server.pids()[1:] if workers > 1 else server.pids()[:1]
                recorders = shared.start_py_spy(args.py_spy, pids, args.duration)
            result = run_load(
                leases, server.url, target, args.duration, args.client_processes, tag + "m", meter, target_pid
            )
            after = evidence_counts()
            result["evidence_problems"] = check_evidence(before, after, warm["ok"] + result["ok"])
            connection_close()
            result.update(workers=workers, run=run, load=load)
            rows.append(result)
            print_run(result)
            if recorders:
                report_py_spy(recorders)
    finally:
        server.stop()
        server.log.close()
        Path(server.log.name).unlink(missing_ok=True)
    return rows


def connection_close() -> None:
    from django.db import connection

    connection.close()


def print_run(r: dict) -> None:
    print(
        f"  workers={r['workers']} run {r['run']}: {r['rps']:,.0f} executions/s over {r['wall']:.1f} s "
        f"({r['requests']:,} calls, {r['errors']} errors), p50 {r['p50']:.1f} ms, p95 {r['p95']:.1f} ms, "
        f"p99 {r['p99']:.1f} ms, max {r['max']:.1f} ms; load avg at start {r['load']:.2f}"
    )
    print(
        f"    CPU (cores busy): clients {r['client_cpu']:.2f}, target {r['target_cpu']:.2f}, server "
        f"{r['server_cpu']:.2f} ({r['server_ms_per_call']:.2f} ms per call; per process "
        f"{' '.join(f'{c:.2f}' for c in r['per_process'])}; "
        f"{r['server_system_share'] * 100:.0f}% in the kernel), postgres {r['postgres_cpu']:.2f} "
        f"({r['postgres_ms_per_call']:.2f} ms per call), machine {r['machine_cpu']:.2f} of {os.cpu_count()}; "
        f"executions per commit {r['requests'] / r['commits'] if r['commits'] else 0:.1f}"
    )
    for kind, count in r["error_kinds"].items():
        print(f"    error: {count} × {kind}")
    for problem in r["evidence_problems"]:
        print(f"    EVIDENCE: {problem}")


def print_table(rows: list[dict], args) -> None:
    print(
        f"\nPOST {EXECUTE_PATH} (builtin:http_api GET to a local target), {args.concurrency} agents "
        f"(own lease, fresh proof per call; clients in {args.client_processes} process(es)), "
        f"{args.duration:.0f} s per run\n"
    )
    print(
        "| Workers | Run | Load avg | Executions/s | p50 ms | p95 ms | p99 ms | max ms | Errors | CPU clients "
        "| CPU target | CPU server | Server ms/call | CPU postgres | CPU machine | Executions per commit |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['workers']} | {r['run']} | {r['load']:.2f} | {r['rps']:,.0f} | {r['p50']:.1f} | {r['p95']:.1f} "
            f"| {r['p99']:.1f} | {r['max']:.1f} | {r['errors']} | {r['client_cpu']:.2f} | {r['target_cpu']:.2f} "
            f"| {r['server_cpu']:.2f} | {r['server_ms_per_call']:.2f} | {r['postgres_cpu']:.2f} "
            f"| {r['machine_cpu']:.2f} | {r['requests'] / r['commits'] if r['commits'] else 0:.1f} |"
        )


def meets_target(row: dict) -> bool:
    return row["rps"] >= THROUGHPUT_TARGET and row["p99"] <= P99_TARGET_MS and row["errors"] == 0


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=2, help="uvicorn worker processes (default 2)")
    parser.add_argument("--sweep", help="comma list of worker counts, e.g. 1,2 (overrides --workers)")
    parser.add_argument("--concurrency", type=int, default=16, help="concurrent agents (default 16)")
    parser.add_argument("--duration", type=float, default=20.0, help="measured seconds per run (default 20)")
    parser.add_argument("--warmup", type=float, default=3.0, help="warm-up seconds before each run (default 3)")
    parser.add_argument("--repeat", type=int, default=1, help="measured runs per configuration (default 1)")
    parser.add_argument("--client-processes", type=int, default=1, help="processes the agents are split over")
    parser.add_argument(
        "--server-root",
        metavar="DIR",
        help="run the server from another checkout of the code (same database schema): before/after comparisons",
    )
    parser.add_argument(
        "--budget",
        type=int,
        default=0,
        metavar="N",
        help="leases with budgets {max_calls: N} (debited per call, as LatchGate's SDKs ask); default none",
    )
    parser.add_argument("--breakdown", type=int, default=0, metavar="N", help="time the steps of N in-process calls")
    parser.add_argument("--profile", action="store_true", help="with --breakdown: cProfile the same calls too")
    parser.add_argument("--py-spy", metavar="PATH", help="py-spy executable: sample the workers in the first run")
    parser.add_argument("--no-load", action="store_true", help="skip the HTTP load (breakdown only)")
    parser.add_argument("--fresh", action="store_true", help="drop and recreate the database first")
    parser.add_argument("--strict", action="store_true", help="exit 1 when the target is missed")
    parser.add_argument("--time-limit", type=float, default=1800.0, help="abort after this many seconds")
    return parser.parse_args(argv)


class TimeLimitExceeded(Exception):
    pass


def main(argv=None) -> int:
    args = parse_args(argv)
    database_url = os.environ.get("DATABASE_URL", "")
    if not database_url.startswith(("postgres://", "postgresql://")):
        raise SystemExit("set DATABASE_URL to a scratch PostgreSQL database on loopback")
    shared.check_loopback(database_url, "DATABASE_URL")
    shared.check_loopback(server_env()["REDIS_URL"], "REDIS_URL")
    if args.concurrency < 1 or args.client_processes < 1 or args.duration <= 0:
        raise SystemExit("--concurrency, --client-processes and --duration must be positive")

    def on_alarm(signum, frame):
        raise TimeLimitExceeded(f"time limit of {args.time_limit:.0f} s exceeded")

    def on_term(signum, frame):
        raise KeyboardInterrupt("SIGTERM")

    signal.signal(signal.SIGALRM, on_alarm)
    signal.signal(signal.SIGTERM, on_term)
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.alarm(max(1, int(args.time_limit)))
    (ROOT / "var").mkdir(exist_ok=True)
    print(f"Machine: {shared.machine_line()}")
    if args.fresh:
        shared.recreate_database(database_url)
    write_catalogue()
    setup_django()
    token = prepare_database(args.concurrency)
    connection_close()
    target_process, target_port = start_target()
    target = f"http://127.0.0.1:{target_port}"
    rows: list[dict] = []
    ok = True
    try:
        if not args.no_load:
            counts = [int(w) for w in args.sweep.split(",")] if args.sweep else [args.workers]
            for workers in counts:
                print(f"\nworkers={workers}, agents={args.concurrency}:")
                rows.extend(measure_configuration(args, token, workers, target, target_process.pid))
            print_table(rows, args)
            ok = all(r["errors"] == 0 and not r["evidence_problems"] for r in rows)
            best = max(rows, key=lambda r: (r["errors"] == 0 and r["p99"] <= P99_TARGET_MS, r["rps"]))
            verdict = "met" if meets_target(best) else "not met"
            print(
                f"\nBest: {best['workers']} worker(s): {best['rps']:,.0f} executions/s, p99 {best['p99']:.1f} ms "
                f"(target ≥ {THROUGHPUT_TARGET:,.0f}/s with p99 ≤ {P99_TARGET_MS:.0f} ms: {verdict})"
            )
            if args.strict and not meets_target(best):
                ok = False
        if args.breakdown:
            stage_breakdown(args.breakdown, target, args.profile)
    except (TimeLimitExceeded, KeyboardInterrupt) as exc:
        print(f"aborted: {str(exc) or 'interrupted'}", file=sys.stderr)
        if rows:
            print_table(rows, args)
        return 1
    finally:
        signal.alarm(0)
        with suppress(Exception):
            target_process.terminate()
            target_process.join(5)
    print(f"\nMachine at the end: load average {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
