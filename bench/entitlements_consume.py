"""Benchmark: ``POST /api/entitlement/consume`` throughput and latency over HTTP (issue 13).

Target: ≥ 1,000 consume calls/s across distinct entitlements on PostgreSQL, through the
shared hot path (``entitlements/fastroute.py``: group commit of ``mandate_consume_runs``).

What the script does:

1. migrates the database in ``DATABASE_URL`` (PostgreSQL on loopback; ``--fresh`` drops and
   recreates it first) and, in organization ``bench-gbx``, makes ``--people`` N people, each
   with an email, an API token and a balance of their own (``--runs`` runs under
   ``gbx_bench``: distinct entitlements);
2. starts the real server (``uvicorn governance.asgi:application``, ``--workers`` N, DEBUG
   off, LOG_LEVEL=WARNING, no access log; ``bench/evaluate_load.py``'s ``Server``);
3. the correctness figure: a new person with 10 runs, and 50 consumes of theirs at once (50
   connections) must give 10 × 200 and 40 × 402 ``entitlement_exhausted``, and the balance 0;
4. per run: warms up, then drives a closed loop of ``--concurrency`` C clients for
   ``--duration`` seconds, client k consuming for person k mod N, each client one keep-alive
   HTTP/1.1 connection (connects 20 ms apart, so uvicorn spreads them over its workers)
   posting ``{"run_id": "<fresh>"}`` back to back. Anything but a 200 with the run_id and
   ``runs_remaining`` is an error;
5. reports consumes/s, p50/p95/p99/max, errors by status and code, CPU during the measured
   window (clients, server and per server process, PostgreSQL backends, machine), the
   server's CPU per consume and consumes per database commit (the group commit's sharing);
6. checks afterwards: per balance, runs taken (total − remaining) = its runs; the runs, the
   ``GBX_RUN_CONSUMED`` events and the 200s grew alike; the whole ledger verifies;
7. in-process, counts the statements of one consume through the hot path's code
   (``entitlements.fastroute.answer``, token cached; each one a round trip).

Usage:

    createdb -h 127.0.0.1 -U postgres h_gbxbench
    DATABASE_URL=postgres://postgres@127.0.0.1:5432/h_gbxbench SECRET_KEY=bench \\
        .venv/bin/python bench/entitlements_consume.py [--workers 2] [--people 64] [--concurrency 32] \\
        [--duration 20] [--repeat 2]

Exit status: 0 when every run had no errors and the checks passed (and, with ``--strict``,
the target was met).
"""

import argparse
import asyncio
import json
import multiprocessing
import os
import signal
import sys
import time
import uuid
from collections import Counter
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlparse

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import evaluate_load as shared  # noqa: E402  (server process, CPU accounting, machine line)
from gate_execute import percentiles, system_cpu  # noqa: E402

THROUGHPUT_TARGET = 1000.0
CONSUME_PATH = "/api/entitlement/consume"
ORGANIZATION = "bench-gbx"
PLAN = "gbx_bench"
CONNECT_STAGGER = 0.02  # seconds between the clients' connects
CORRECTNESS_RUNS, CORRECTNESS_CALLS = 10, 50


# --- database ------------------------------------------------------------------------------


def setup_django() -> None:
    for key, value in shared.server_env().items():
        os.environ.setdefault(key, value)
    os.environ["DEBUG"] = "false"
    import django

    django.setup()


def close_connection() -> None:
    from django.db import connection

    connection.close()


def make_person(organization, username: str, runs: int) -> str:
    """A person of the bench's organization with ``runs`` more runs; a new token's secret."""
    from django.utils import timezone

    from entitlements.services.issuance import issue_runs
    from governance.models import Person
    from governance.services.people import create_person
    from governance.services.tokens import issue_token

    email = f"{username}@bench.example"
    person = Person.objects.filter(username=username).first() or create_person(organization, username, email=email)
    _, secret = issue_token(person, "bench consume", [])
    issue_runs(
        organization.pk,
        principal=email,
        plan_id=PLAN,
        runs_total=runs,
        expires_at=timezone.now() + timedelta(days=1),
        issued_by="bench",
    )
    return secret


def prepare_database(people: int, runs: int) -> list[str]:
    """Migrate; the people's tokens, each with a balance of ``runs`` more runs."""
    from django.core.management import call_command

    from governance.services.people import ensure_organization

    start = time.perf_counter()
    call_command("migrate", verbosity=0)
    organization = ensure_organization(ORGANIZATION, "GBX consume benchmark")
    secrets = [make_person(organization, f"bench-gbx-{index:04d}", runs) for index in range(people)]
    print(
        f"database ready (migrate, {people} people with {runs:,} more runs each, tokens) in "
        f"{time.perf_counter() - start:.1f} s"
    )
    return secrets


def ledger_counts() -> dict:
    """What the checks compare: the bench's runs, balances and consume events."""
    from django.db.models import Count, F, Sum

    from entitlements.choices import RunEvent
    from entitlements.models import Entitlement, Run
    from evidence.models import AuditEvent

    balances = Entitlement.objects.filter(organization__slug=ORGANIZATION, plan_id=PLAN)
    taken = balances.aggregate(taken=Sum(F("runs_total") - F("runs_remaining")))["taken"] or 0
    counts = {
        "runs": Run.objects.filter(organization__slug=ORGANIZATION).count(),
        "taken": taken,
        "events": AuditEvent.objects.filter(event_type=RunEvent.CONSUMED).count(),
        "mismatched": [
            e.entitlement_id
            for e in balances.annotate(runs_count=Count("runs"))
            if e.runs_total - e.runs_remaining != e.runs_count
        ],
    }
    close_connection()
    return counts


def check_ledger(before: dict, after: dict, ok: int) -> list[str]:
    """Every 200 took one run and left one run row and one event; balances add up; the ledger
    verifies."""
    from evidence.services.verification import verify_ledger

    problems = [
        f"{name}: +{after[name] - before[name]} for {ok} consumes"
        for name in ("runs", "taken", "events")
        if after[name] - before[name] != ok
    ]
    problems += [f"balance {entitlement_id}: runs taken ≠ its runs" for entitlement_id in after["mismatched"]]
    start = time.perf_counter()
    verdict = verify_ledger()
    seconds = time.perf_counter() - start
    close_connection()
    if not verdict.valid:
        problems.append(f"the ledger does not verify: {verdict}")
    print(f"    ledger verified: {verdict.valid} ({verdict.events_checked:,} events in {seconds:.1f} s)")
    return problems


# --- the correctness figure ----------------------------------------------------------------------


def fifty_at_once(url: str) -> list[str]:
    """50 parallel consumes of a new person's 10-run balance: 10 × 200, 40 × 402, balance 0."""
    import httpx

    from entitlements.models import Entitlement, Run
    from governance.services.people import ensure_organization

    username = f"bench-gbx-scarce-{uuid.uuid4().hex[:8]}"
    secret = make_person(ensure_organization(ORGANIZATION, "GBX consume benchmark"), username, CORRECTNESS_RUNS)
    close_connection()

    async def scenario():
        limits = httpx.Limits(max_connections=CORRECTNESS_CALLS)
        headers = {"Authorization": f"Bearer {secret}"}
        async with httpx.AsyncClient(base_url=url, headers=headers, limits=limits, timeout=60) as client:
            tag = uuid.uuid4().hex[:8]
            return await asyncio.gather(
                *(client.post(CONSUME_PATH, json={"run_id": f"once-{tag}-{n}"}) for n in range(CORRECTNESS_CALLS))
            )

    answers = asyncio.run(scenario())
    outcomes = Counter(f"{a.status_code} {a.json().get('error', '')}".strip() for a in answers)
    balance = Entitlement.objects.get(principal=f"{username}@bench.example")
    runs = Run.objects.filter(entitlement=balance).count()
    close_connection()
    problems = []
    expected = {"200": CORRECTNESS_RUNS, "402 entitlement_exhausted": CORRECTNESS_CALLS - CORRECTNESS_RUNS}
    if dict(outcomes) != expected:
        problems.append(f"answers {dict(outcomes)}, expected {expected}")
    if balance.runs_remaining != 0 or runs != CORRECTNESS_RUNS:
        problems.append(f"balance left {balance.runs_remaining}, {runs} runs")
    remaining = sorted(a.json()["runs_remaining"] for a in answers if a.status_code == 200)
    if remaining != list(range(CORRECTNESS_RUNS)):
        problems.append(f"runs_remaining answered {remaining}")
    print(
        f"  {CORRECTNESS_CALLS} parallel consumes of a {CORRECTNESS_RUNS}-run balance: "
        + ", ".join(f"{count} × {kind}" for kind, count in sorted(outcomes.items()))
        + f"; balance {balance.runs_remaining}, {runs} runs"
        + ("" if not problems else f"; PROBLEMS: {problems}")
    )
    return problems


# --- the load clients (their own processes) -----------------------------------------------------


async def _client(secret, host, port, tag, connect_at, window, latencies, outcomes):
    head = (
        f"POST {CONSUME_PATH} HTTP/1.1\r\nHost: {host}:{port}\r\nAuthorization: Bearer {secret}\r\n"
        "Content-Type: application/json\r\nConnection: keep-alive\r\nContent-Length: "
    ).encode()
    await asyncio.sleep(max(0.0, connect_at - time.time()))
    reader, writer = await asyncio.open_connection(host, port)
    await window["go"].wait()
    sequence = 0
    while time.perf_counter() < window["deadline"]:
        if writer is None:
            reader, writer = await asyncio.open_connection(host, port)
        sequence += 1
        run_id = f"{tag}-{sequence}"
        body = b'{"run_id":"' + run_id.encode() + b'"}'
        start = time.perf_counter()
        try:
            writer.write(head + str(len(body)).encode() + b"\r\n\r\n" + body)
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
            if status == 200 and answer.get("run_id") == run_id and isinstance(answer.get("runs_remaining"), int):
                outcomes["ok"] += 1
            else:
                outcomes[f"{status} {answer.get('error', '')}".strip()] += 1
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


async def _drive(clients, server_url, seconds, start_at):
    parsed = urlparse(server_url)
    window = {"go": asyncio.Event(), "deadline": 0.0}
    latencies: list[float] = []
    outcomes: Counter = Counter()
    tasks = [
        asyncio.create_task(_client(secret, parsed.hostname, parsed.port, tag, at, window, latencies, outcomes))
        for secret, tag, at in clients
    ]
    await asyncio.sleep(max(0.0, start_at - time.time()))
    began = time.perf_counter()
    window["deadline"] = began + seconds
    window["go"].set()
    for outcome in await asyncio.gather(*tasks, return_exceptions=True):
        if isinstance(outcome, BaseException):
            outcomes[f"client crashed: {outcome!r}"[:120]] += 1
    return latencies, outcomes, began, time.perf_counter()


def client_process(clients, server_url, seconds, start_at, queue):
    """One load process: a coroutine and a keep-alive connection per client."""
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    cpu_start = time.process_time()
    latencies, outcomes, began, ended = asyncio.run(_drive(clients, server_url, seconds, start_at))
    queue.put(
        {
            "latencies": latencies,
            "outcomes": dict(outcomes),
            "wall": ended - began,
            "cpu": time.process_time() - cpu_start,
        }
    )


def run_load(secrets, concurrency, server_url, seconds, processes, run_tag, meter=None) -> dict:
    """``concurrency`` clients, client k consuming for person k mod N, in ``processes``
    processes; they connect ``CONNECT_STAGGER`` s apart, then load together for ``seconds``."""
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    connect_base = time.time() + 2.0  # spawned interpreters import first
    clients = [
        (secrets[k % len(secrets)], f"{run_tag}-{k}", connect_base + k * CONNECT_STAGGER) for k in range(concurrency)
    ]
    start_at = connect_base + concurrency * CONNECT_STAGGER + 0.3
    workers = [
        context.Process(target=client_process, args=(clients[i::processes], server_url, seconds, start_at, queue))
        for i in range(processes)
        if clients[i::processes]
    ]
    for worker in workers:
        worker.start()
    try:
        time.sleep(max(0.0, start_at - time.time()))
        before = meter.snapshot() if meter else None
        system_before = system_cpu(meter.server.pids()) if meter else {}
        results = [queue.get(timeout=seconds + 120) for _ in workers]
        after = meter.snapshot() if meter else None
        system_after = system_cpu(meter.server.pids()) if meter else {}
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
        postgres_seconds = shared.CpuMeter.used(before, after, "postgres")
        calls = row["requests"] or 1
        row.update(
            server_cpu=server_seconds / span,
            server_ms_per_call=server_seconds / calls * 1000,
            per_process=sorted((cpu - before["server"].get(pid, 0.0)) / span for pid, cpu in after["server"].items()),
            server_system_share=sum(v - system_before.get(pid, 0.0) for pid, v in system_after.items()) / server_seconds
            if server_seconds
            else 0.0,
            postgres_cpu=postgres_seconds / span,
            postgres_ms_per_call=postgres_seconds / calls * 1000,
            machine_cpu=(after["busy"] - before["busy"]) / span,
            client_cpu=sum(result["cpu"] for result in results) / wall if wall else 0.0,
            commits=after["commits"] - before["commits"],
        )
    return row


# --- in-process: round trips of one consume ------------------------------------------------------


def count_round_trips(secret: str) -> list[str]:
    """The statements of one consume through the hot path's code, its token cached."""
    from entitlements.fastroute import answer

    tag = uuid.uuid4().hex[:8]
    assert answer(secret, json.dumps({"run_id": f"rt-{tag}-0"}).encode()) is not None  # caches the token
    with shared.captured() as captured:
        assert answer(secret, json.dumps({"run_id": f"rt-{tag}-1"}).encode()) is not None
    statements = [query["sql"] for query in captured.captured_queries]
    shared.print_statements("One consume through the hot path's code (token cached)", statements)
    close_connection()
    return statements


# --- runs ------------------------------------------------------------------------------------------


def measure_configuration(args, secrets: list[str], workers: int) -> tuple[list[dict], list[str]]:
    database_url = os.environ["DATABASE_URL"]
    server = shared.Server(workers)
    rows, problems = [], []
    try:
        server.start()
        problems += fifty_at_once(server.url)
        meter = shared.CpuMeter(server, database_url)
        for run in range(1, args.repeat + 1):
            load = os.getloadavg()[0]
            tag = f"w{workers}r{run}-{uuid.uuid4().hex[:6]}"
            before = ledger_counts()
            warm = run_load(secrets, args.concurrency, server.url, args.warmup, args.client_processes, tag)
            if warm["ok"] == 0:
                raise RuntimeError(f"warm-up failed: {warm['error_kinds']}\n{server.output()}")
            result = run_load(
                secrets, args.concurrency, server.url, args.duration, args.client_processes, tag + "m", meter
            )
            result["problems"] = check_ledger(before, ledger_counts(), warm["ok"] + result["ok"])
            result.update(workers=workers, run=run, load=load)
            rows.append(result)
            print_run(result)
    finally:
        server.stop()
        server.log.close()
        Path(server.log.name).unlink(missing_ok=True)
    return rows, problems


def print_run(r: dict) -> None:
    print(
        f"  workers={r['workers']} run {r['run']}: {r['rps']:,.0f} consumes/s over {r['wall']:.1f} s "
        f"({r['requests']:,} calls, {r['errors']} errors), p50 {r['p50']:.1f} ms, p95 {r['p95']:.1f} ms, "
        f"p99 {r['p99']:.1f} ms, max {r['max']:.1f} ms; load avg at start {r['load']:.2f}"
    )
    print(
        f"    CPU (cores busy): clients {r['client_cpu']:.2f}, server {r['server_cpu']:.2f} "
        f"({r['server_ms_per_call']:.2f} ms per consume; per process "
        f"{' '.join(f'{c:.2f}' for c in r['per_process'])}; {r['server_system_share'] * 100:.0f}% in the kernel), "
        f"postgres {r['postgres_cpu']:.2f} ({r['postgres_ms_per_call']:.2f} ms per consume), machine "
        f"{r['machine_cpu']:.2f} of {os.cpu_count()}; consumes per commit "
        f"{r['requests'] / r['commits'] if r['commits'] else 0:.1f}"
    )
    for kind, count in r["error_kinds"].items():
        print(f"    error: {count} × {kind}")
    for problem in r["problems"]:
        print(f"    CHECK: {problem}")


def print_table(rows: list[dict], args) -> None:
    print(
        f"\nPOST {CONSUME_PATH}, {args.concurrency} clients over {args.people} people (each their own "
        f"balance), {args.duration:.0f} s per run\n"
    )
    print(
        "| Workers | Run | Load avg | Consumes/s | p50 ms | p95 ms | p99 ms | max ms | Errors | CPU clients "
        "| CPU server | Server ms/consume | CPU postgres | PostgreSQL ms/consume | CPU machine | Consumes per commit |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['workers']} | {r['run']} | {r['load']:.2f} | {r['rps']:,.0f} | {r['p50']:.1f} | {r['p95']:.1f} "
            f"| {r['p99']:.1f} | {r['max']:.1f} | {r['errors']} | {r['client_cpu']:.2f} | {r['server_cpu']:.2f} "
            f"| {r['server_ms_per_call']:.2f} | {r['postgres_cpu']:.2f} | {r['postgres_ms_per_call']:.2f} "
            f"| {r['machine_cpu']:.2f} | {r['requests'] / r['commits'] if r['commits'] else 0:.1f} |"
        )


def meets_target(row: dict) -> bool:
    return row["rps"] >= THROUGHPUT_TARGET and row["errors"] == 0 and not row["problems"]


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=2, help="uvicorn worker processes (default 2)")
    parser.add_argument("--sweep", help="comma list of worker counts, e.g. 1,2 (overrides --workers)")
    parser.add_argument("--people", type=int, default=64, help="people, each with a token and a balance (default 64)")
    parser.add_argument("--runs", type=int, default=1_000_000, help="runs added to each balance (default 1,000,000)")
    parser.add_argument("--concurrency", type=int, default=32, help="concurrent clients (default 32)")
    parser.add_argument("--duration", type=float, default=20.0, help="measured seconds per run (default 20)")
    parser.add_argument("--warmup", type=float, default=3.0, help="warm-up seconds before each run (default 3)")
    parser.add_argument("--repeat", type=int, default=1, help="measured runs per configuration (default 1)")
    parser.add_argument("--client-processes", type=int, default=1, help="processes the clients are split over")
    parser.add_argument("--no-load", action="store_true", help="skip the HTTP load (round trips only)")
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
    shared.check_loopback(shared.server_env()["REDIS_URL"], "REDIS_URL")
    if min(args.people, args.concurrency, args.client_processes, args.runs) < 1 or args.duration <= 0:
        raise SystemExit("--people, --concurrency, --client-processes, --runs and --duration must be positive")

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
    setup_django()
    secrets = prepare_database(args.people, args.runs)
    close_connection()
    rows: list[dict] = []
    problems: list[str] = []
    ok = True
    try:
        if not args.no_load:
            counts = [int(w) for w in args.sweep.split(",")] if args.sweep else [args.workers]
            for workers in counts:
                print(f"\nworkers={workers}, clients={args.concurrency}, people={args.people}:")
                measured, found = measure_configuration(args, secrets, workers)
                rows += measured
                problems += found
            print_table(rows, args)
            ok = not problems and all(r["errors"] == 0 and not r["problems"] for r in rows)
            best = max(rows, key=lambda r: (r["errors"] == 0 and not r["problems"], r["rps"]))
            verdict = "met" if meets_target(best) else "not met"
            print(
                f"\nBest: {best['workers']} worker(s): {best['rps']:,.0f} consumes/s, p99 {best['p99']:.1f} ms "
                f"(target ≥ {THROUGHPUT_TARGET:,.0f}/s: {verdict})"
            )
            if args.strict and not meets_target(best):
                ok = False
        statements = count_round_trips(secrets[0])
        print(f"\nRound trips per consume on the hot path (transaction control included): {len(statements)}")
    except (TimeLimitExceeded, KeyboardInterrupt) as exc:
        print(f"aborted: {str(exc) or 'interrupted'}", file=sys.stderr)
        if rows:
            print_table(rows, args)
        return 1
    finally:
        signal.alarm(0)
    print(f"\nMachine at the end: load average {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
