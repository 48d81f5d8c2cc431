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
import base64
import hashlib
import json
import os
import shutil
import sys
import time
import uuid
from contextlib import suppress
from dataclasses import replace
from functools import partial
from pathlib import Path
from urllib.parse import urlparse

import loadkit

ROOT = loadkit.ROOT
THROUGHPUT_TARGET = 600.0
P99_TARGET_MS = 50.0
ACTION = "bench_fetch"
AGENT = "agent-bench-{:02d}"
EXECUTE_PATH = f"/v1/actions/{ACTION}/execute"
ACTIONS_DIR = ROOT / "var" / "gate_execute-actions"
CONNECT_STAGGER = 0.02  # seconds between the agents' connects


# --- environment, database, catalogue --------------------------------------------------------


def server_env(public_base_url: str = "") -> dict[str, str]:
    env = loadkit.server_env()
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
    os.environ["MANDATE_ACTIONS_DIR"] = str(ACTIONS_DIR)
    loadkit.setup_django(server_env())


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


class Server(loadkit.Server):
    """The real server with ``PUBLIC_BASE_URL`` set to its own URL, run from ``root`` (another
    checkout of the code, to compare before and after on one database)."""

    def __init__(self, workers: int, root: Path = ROOT):
        super().__init__(workers, "gate_execute", root)

    def environment(self) -> dict[str, str]:
        return server_env(self.url)


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


class Executions(loadkit.Calls):
    """One agent's calls: each a fresh proof, signed just before it is sent. Anything but a 200
    whose ``verification_outcome`` is ``verified`` is an error."""

    def __init__(self, tally, agent, host, port, htu, target, tag):
        super().__init__(tally)
        self.agent, self.htu, self.target, self.tag = agent, htu, target, tag
        self.head = (
            f"POST {EXECUTE_PATH} HTTP/1.1\r\nHost: {host}:{port}\r\nAuthorization: DPoP {agent.lease}\r\n"
            "Content-Type: application/json\r\nConnection: keep-alive\r\n"
        ).encode()

    def request(self, sequence: int) -> tuple[bytes, ...]:
        body = json.dumps({"url": f"{self.target}/items/{self.tag}-{sequence}"}).encode()
        proof = self.agent.proof("POST", self.htu).encode("ascii")
        return (self.head + b"DPoP: " + proof + b"\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n", body)

    def answered(self, sequence: int, status: int, content: bytes) -> None:
        answer = json.loads(content)
        if status == 200 and answer.get("verification_outcome") == "verified":
            self.tally.ok()
        else:
            self.tally.error(f"{status} {answer.get('error') or answer.get('verification_outcome')}")


def make_agents(share):
    """In a load process: an agent per lease, one keep-alive connection each."""
    leases, server_url, target, run_tag = share
    parsed = urlparse(server_url)
    htu = server_url + EXECUTE_PATH
    tally = loadkit.Tally()
    clients = []
    for i, (pem, lease, connect_at) in enumerate(leases):
        agent = Agent(pem)
        agent.lease = lease
        calls = Executions(tally, agent, parsed.hostname, parsed.port, htu, target, f"{run_tag}-{i}")
        clients.append(partial(loadkit.keep_alive_client, parsed.hostname, parsed.port, connect_at, calls))
    return clients, tally


def run_load(leases, server_url, target, seconds, processes, run_tag, meter=None) -> dict:
    """The agents in ``processes`` processes; they connect ``CONNECT_STAGGER`` s apart (a burst of
    connects lands on one uvicorn worker), then load together for ``seconds``."""
    connect_times, start_at = loadkit.schedule(len(leases), CONNECT_STAGGER)
    timed = [(pem, lease, at) for (pem, lease), at in zip(leases, connect_times, strict=True)]
    shares = [(timed[i::processes], server_url, target, f"{run_tag}-p{i}") for i in range(processes)]
    return loadkit.run_load(make_agents, [share for share in shares if share[0]], seconds, start_at, meter=meter)


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
    timer = loadkit.StageTimer()
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


# --- runs -------------------------------------------------------------------------------------


def measure_configuration(args, token: str, workers: int, target: str, target_pid: int) -> list[dict]:
    database_url = os.environ["DATABASE_URL"]
    server = Server(workers, Path(args.server_root).resolve() if args.server_root else ROOT)
    rows = []
    try:
        server.start()
        leases = issue_leases(server.url, token, args.concurrency, args.budget)
        meter = loadkit.CpuMeter(server, database_url, {"target": target_pid})
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
                recorders = loadkit.start_py_spy(args.py_spy, pids, args.duration, "gate_execute")
            result = run_load(leases, server.url, target, args.duration, args.client_processes, tag + "m", meter)
            after = evidence_counts()
            result["problems"] = check_evidence(before, after, warm["ok"] + result["ok"])
            loadkit.close_connection()
            result.update(workers=workers, run=run, load=load)
            rows.append(result)
            loadkit.print_call_run(result, "executions/s", "call", "executions", "EVIDENCE", others=("target",))
            if recorders:
                loadkit.report_py_spy(recorders, PARTS, keep=True)
    finally:
        server.close()
    return rows


COLUMNS = loadkit.call_columns("Executions/s", "call", "Executions", others=("target",))


def print_table(rows: list[dict], args) -> None:
    title = (
        f"POST {EXECUTE_PATH} (builtin:http_api GET to a local target), {args.concurrency} agents "
        f"(own lease, fresh proof per call; clients in {args.client_processes} process(es)), "
        f"{args.duration:.0f} s per run"
    )
    loadkit.print_table(title, COLUMNS, rows)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    loadkit.add_server_arguments(parser, "comma list of worker counts, e.g. 1,2 (overrides --workers)")
    loadkit.add_window_arguments(parser, 16, "agents")
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
    loadkit.add_run_arguments(parser, "breakdown only", "the target")
    return parser.parse_args(argv)


def measure(args, token: str, target: str, target_pid: int, rows: list[dict]) -> bool:
    """The HTTP load (unless ``--no-load``), then the breakdown; whether all went well."""
    ok = True
    if not args.no_load:
        loadkit.sweep(
            args,
            rows,
            f"agents={args.concurrency}",
            lambda workers: measure_configuration(args, token, workers, target, target_pid),
        )
        print_table(rows, args)
        ok = all(r["errors"] == 0 and not r["problems"] for r in rows)
        goal = f"≥ {THROUGHPUT_TARGET:,.0f}/s with p99 ≤ {P99_TARGET_MS:.0f} ms"
        predicates = loadkit.fast_enough(THROUGHPUT_TARGET, P99_TARGET_MS)
        ok = loadkit.report_best(rows, args, "executions/s", goal, *predicates) and ok
    if args.breakdown:
        stage_breakdown(args.breakdown, target, args.profile)
    return ok


def main(argv=None) -> int:
    args = parse_args(argv)
    loadkit.begin_load(args)
    write_catalogue()
    setup_django()
    token = prepare_database(args.concurrency)
    loadkit.close_connection()
    target_process, target_port = loadkit.start_target()
    target = f"http://127.0.0.1:{target_port}"
    try:
        body = partial(measure, args, token, target, target_process.pid)
        return loadkit.run_main(body, partial(print_table, args=args))
    finally:
        with suppress(Exception):
            target_process.terminate()
            target_process.join(5)


if __name__ == "__main__":
    sys.exit(main())
