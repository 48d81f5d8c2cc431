"""Benchmark: ``POST /v1/evaluate`` throughput and latency over HTTP (issue 4, "Performance").

Target: at least 1,000 evaluations/s sustained with p99 at most 50 ms at 32 concurrent
clients, every request a full transaction with its audit events, on the 2-core
development machine, against PostgreSQL.

What the script does:

1. migrates the database in ``DATABASE_URL`` (PostgreSQL on loopback; ``--fresh`` drops and
   recreates it first), creates the demo organization (``bootstrap_demo``), applies and
   approves the demo bundle (``apply_bundle ... --approve-as admin``) and creates an
   operator API token (``create_api_token``), all as ``manage.py`` subprocesses;
2. starts the real server (``uvicorn governance.asgi:application``, ``--workers`` N,
   DEBUG off, LOG_LEVEL=WARNING, no access log) on 127.0.0.1 and a free port, waits for
   ``/readyz``;
3. per run: warms up, then drives a closed loop of ``--concurrency`` clients for
   ``--duration`` seconds, each client one keep-alive HTTP/1.1 connection posting the
   accept-path payment request (tests/test_evaluate.py ``payment()``) with a unique
   request_id. Clients connect ``--connect-stagger`` ms apart before the window: connects in
   one burst all land on one uvicorn worker. Any non-200 or an outcome other than ``accept`` is an error. The clients
   run in ``--client-processes`` separate processes (default 1), with ``--client httpx``
   (``httpx.AsyncClient``, default) or ``--client raw`` (a minimal asyncio HTTP/1.1
   client that costs far less CPU; on 2 cores the client competes with the server);
4. reports requests/s, p50/p90/p99/max latency, errors, and where the CPU went during the
   measured window (client processes, server workers, PostgreSQL backends, machine);
5. stops the server (also on Ctrl-C, errors and ``--time-limit``);
6. counts the SQL statements (round trips) of one evaluation in-process: the service
   ``envelopes.evaluation.engine.evaluate`` and a whole HTTP request through Django's
   test client, each after a warm-up call, and prints them.

``--sweep 1,2,3,4`` repeats steps 2-5 for each worker count and names the best one;
``--profile N`` cProfiles N in-process HTTP evaluations (Django test client) and prints the
hot spots.

Usage:

    createdb -h 127.0.0.1 -U postgres h_evalbench
    DATABASE_URL=postgres://postgres@127.0.0.1:5432/h_evalbench SECRET_KEY=bench \\
        .venv/bin/python bench/evaluate_load.py [--workers 2] [--concurrency 32] [--duration 20] \\
        [--repeat 2] [--sweep 1,2,3,4] [--client raw] [--client-processes 2] [--profile 2000]

Exit status: 0 when every run had no errors (and, with ``--strict``, met the targets).
"""

import argparse
import asyncio
import cProfile
import json
import os
import sys
import time
import uuid
from functools import partial
from urllib.parse import urlparse

import loadkit

ROOT = loadkit.ROOT
THROUGHPUT_TARGET = 1000.0  # evaluations per second
P99_TARGET_MS = 50.0
ROUND_TRIP_TARGET = 6
DEMO_BUNDLE = ROOT / "controlplane" / "demo" / "bundle.yaml"


def payment(request_id: str) -> dict:
    """The accept-path request of tests/test_evaluate.py ``payment()``."""
    return {
        "surface_id": "surf-payment-release",
        "agent_id": "agent-payments-prod",
        "confidence": 0.95,
        "consequence": {"type": "monetary", "amount": 500, "currency": "GBP"},
        "context": {"account_id": "acc-1", "destination_country": "GB"},
        "request_id": request_id,
        "request_source": "bench",
    }


def body_template() -> tuple[bytes, bytes]:
    """The request body split around its request_id, so a client only concatenates bytes."""
    marker = "@@REQUEST_ID@@"
    prefix, suffix = json.dumps(payment(marker), separators=(",", ":")).split(marker)
    return prefix.encode(), suffix.encode()


# --- database ----------------------------------------------------------------------------


def prepare_database() -> str:
    """Migrate, create the demo organization with the approved demo bundle; return a token."""
    start = time.perf_counter()
    loadkit.manage("migrate", "-v0")
    loadkit.manage("bootstrap_demo")
    loadkit.manage(
        "apply_bundle",
        str(DEMO_BUNDLE),
        "--organization",
        "demo",
        "--actor",
        "system:demo",
        "--approve-as",
        "admin",
    )
    token = (
        loadkit.manage("create_api_token", "admin", "--name", "bench", "--role", "operator").strip().splitlines()[-1]
    )
    print(f"database ready (migrate + demo bundle + token) in {time.perf_counter() - start:.1f} s")
    return token


# --- the load clients (run in their own processes) --------------------------------------


class ErrorSamples(loadkit.Tally):
    """The errors of one load process: how many, and the first five in full."""

    def __init__(self):
        super().__init__()
        self.count, self.samples = 0, []

    def ok(self) -> None:
        pass

    def error(self, kind: str) -> None:
        self.count += 1
        if len(self.samples) < 5:
            self.samples.append(kind)

    def failed(self, exc: BaseException) -> None:
        self.error(f"{type(exc).__name__}: {exc}")

    def crashed(self, exc: BaseException) -> None:
        self.error(f"client crashed: {exc!r}")

    def result(self) -> dict:
        return {"errors": self.count, "error_samples": self.samples}

    @staticmethod
    def merge(results: list[dict]) -> dict:
        return {
            "errors": sum(result["errors"] for result in results),
            "error_samples": [sample for result in results for sample in result["error_samples"]][:5],
        }


class Evaluations(loadkit.Calls):
    """The raw client's calls: a minimal keep-alive HTTP/1.1 client, far cheaper in CPU than
    httpx. Any non-200 or an outcome other than ``accept`` is an error."""

    def __init__(self, tally, host, port, token, prefix, suffix, tag):
        super().__init__(tally)
        self.head = (
            f"POST /v1/evaluate HTTP/1.1\r\nHost: {host}:{port}\r\nAuthorization: Bearer {token}\r\n"
            "Content-Type: application/json\r\nConnection: keep-alive\r\nContent-Length: "
        ).encode()
        self.prefix, self.suffix, self.tag = prefix, suffix, tag

    def request(self, sequence: int) -> tuple[bytes, ...]:
        body = self.prefix + f"{self.tag}-{sequence}".encode() + self.suffix
        return (self.head + str(len(body)).encode() + b"\r\n\r\n" + body,)

    def answered(self, sequence: int, status: int, content: bytes) -> None:
        if status != 200 or json.loads(content).get("outcome") != "accept":
            self.tally.error(f"{status} {content[:200]!r}")


async def _httpx_client(url, token, prefix, suffix, tag, connect_at, tally, window, latencies):
    import httpx

    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
    async with httpx.AsyncClient(base_url=url, headers=headers, limits=limits, timeout=30.0, http2=False) as client:
        await asyncio.sleep(max(0.0, connect_at - time.time()))
        await client.get("/healthz")  # opens the keep-alive connection before the measured window
        await window["go"].wait()
        sequence = 0
        while time.perf_counter() < window["deadline"]:
            sequence += 1
            body = prefix + f"{tag}-{sequence}".encode() + suffix
            start = time.perf_counter()
            try:
                response = await client.post("/v1/evaluate", content=body)
                latencies.append(time.perf_counter() - start)
                if response.status_code != 200 or response.json().get("outcome") != "accept":
                    tally.error(f"{response.status_code} {response.text[:200]}")
            except httpx.HTTPError as exc:
                latencies.append(time.perf_counter() - start)
                tally.failed(exc)


def make_clients(share):
    """In a load process: the clients of one share, ``--client raw`` or ``httpx``."""
    kind, url, token, run_tag, connect_times = share
    prefix, suffix = body_template()
    parsed = urlparse(url)
    tally = ErrorSamples()
    clients = []
    for index, connect_at in enumerate(connect_times):
        tag = f"{run_tag}-{index}"
        if kind == "raw":
            calls = Evaluations(tally, parsed.hostname, parsed.port, token, prefix, suffix, tag)
            clients.append(partial(loadkit.keep_alive_client, parsed.hostname, parsed.port, connect_at, calls))
        else:
            clients.append(partial(_httpx_client, url, token, prefix, suffix, tag, connect_at, tally))
    return clients, tally


def run_load(kind, url, token, concurrency, seconds, processes, run_tag, meter=None, stagger=0.0) -> dict:
    """Drive ``concurrency`` clients split over ``processes`` processes; merge their results.

    Clients open their connections ``stagger`` seconds apart before the measured window (so a
    burst of connects does not land on one server worker); with a ``meter``, CPU use is
    sampled when the window opens and when the clients finish.
    """
    connect_times, start_at = loadkit.schedule(concurrency, stagger, lead=1.5)
    sizes = [concurrency // processes + (1 if i < concurrency % processes else 0) for i in range(processes)]
    shares, first = [], 0
    for i, size in enumerate(sizes):
        if size:
            shares.append((kind, url, token, f"{run_tag}-p{i}", connect_times[first : first + size]))
        first += size
    return loadkit.run_load(make_clients, shares, seconds, start_at, ErrorSamples, meter)


# --- one configuration -------------------------------------------------------------------


def report_py_spy(recorders, top: int = 30) -> None:
    """Merge the workers' samples; print the hottest functions by self and by inclusive samples."""
    own, inclusive, total = loadkit.read_py_spy(recorders, keep=False)
    if not total:
        return
    print(f"\npy-spy (GIL holder only): {total:,} samples of busy server threads (all workers, one measured run)")
    for title, table in (("self", own), ("inclusive", inclusive)):
        print(f"\nTop {top} functions by {title} samples:")
        for frame, samples in table.most_common(top):
            print(f"  {samples / total * 100:5.1f}%  {frame}")


def measure_configuration(args, token: str, workers: int) -> list[dict]:
    database_url = os.environ["DATABASE_URL"]
    server = loadkit.Server(workers, "evaluate_load")
    rows = []
    try:
        server.start()
        meter = loadkit.CpuMeter(server, database_url)
        for run in range(1, args.repeat + 1):
            load = os.getloadavg()[0]
            tag = f"w{workers}r{run}-{uuid.uuid4().hex[:8]}"
            warm = run_load(
                args.client,
                server.url,
                token,
                args.concurrency,
                args.warmup,
                args.client_processes,
                tag,
                stagger=args.connect_stagger / 1000,
            )
            if warm["requests"] == 0 or warm["errors"] == warm["requests"]:
                raise RuntimeError(f"warm-up failed: {warm['error_samples']}\n{server.output()}")
            recorders = []
            if args.py_spy and run == 1:
                worker_pids = server.pids()[1:] if workers > 1 else server.pids()[:1]
                recorders = loadkit.start_py_spy(args.py_spy, worker_pids, args.duration, "evaluate_load")
            result = run_load(
                args.client,
                server.url,
                token,
                args.concurrency,
                args.duration,
                args.client_processes,
                tag + "m",
                meter,
                stagger=args.connect_stagger / 1000,
            )
            result.update(workers=workers, run=run, load=load, warmup_rps=warm["rps"])
            rows.append(result)
            print_run(result)
            if recorders:
                report_py_spy(recorders)
    finally:
        server.close()
    return rows


def print_run(r: dict) -> None:
    loadkit.print_run_line(r, "req/s", "requests", "p90")
    print(
        f"    CPU (cores busy): client {r['client_cpu']:.2f}, server {r['server_cpu']:.2f}, "
        f"postgres {r['postgres_cpu']:.2f}, machine {r['machine_cpu']:.2f} of {os.cpu_count()}; "
        f"per server process {' '.join(f'{c:.2f}' for c in r['per_process'])}"
    )
    for sample in r["error_samples"]:
        print(f"    error: {sample}")


COLUMNS = loadkit.run_columns("Requests/s", "p90") + [
    ("CPU client", "{client_cpu:.2f}"),
    ("CPU server", "{server_cpu:.2f}"),
    ("CPU postgres", "{postgres_cpu:.2f}"),
    ("CPU machine", "{machine_cpu:.2f}"),
    ("Evaluations per commit", "{per_commit:.1f}"),
]


def print_table(rows: list[dict], args) -> None:
    title = (
        f"POST /v1/evaluate, accept path, {args.concurrency} concurrent clients "
        f"({args.client} client in {args.client_processes} process(es)), {args.duration:.0f} s per run"
    )
    loadkit.print_table(title, COLUMNS, rows)


# --- in-process: round trips per evaluation, profile -------------------------------------


def count_round_trips(token: str) -> dict:
    """Statements of one evaluation: the service alone, then a whole HTTP request."""
    from django.test import Client

    from envelopes.evaluation.engine import EvaluationRequest, evaluate
    from governance.models import Organization

    organization = Organization.objects.get(slug="demo")
    tag = uuid.uuid4().hex[:8]

    def service_call(n: int):
        body = payment(f"rt-{tag}-svc-{n}")
        request = EvaluationRequest(
            surface_id=body["surface_id"],
            agent_id=body["agent_id"],
            confidence=body["confidence"],
            request_source=body["request_source"],
            request_id=body["request_id"],
            consequence=body["consequence"],
            context=body["context"],
        )
        return evaluate(organization, request, json.dumps(body), performer_id="bench")

    assert service_call(0)["outcome"] == "accept"  # warms the authority snapshot
    with loadkit.captured() as service:
        assert service_call(1)["outcome"] == "accept"
    service_statements = [q["sql"] for q in service.captured_queries]
    loadkit.print_statements("Service evaluate() (warm snapshot)", service_statements)

    client = Client(HTTP_AUTHORIZATION=f"Bearer {token}")

    def http_call(n: int):
        response = client.post("/v1/evaluate", json.dumps(payment(f"rt-{tag}-http-{n}")), "application/json")
        assert response.status_code == 200 and response.json()["outcome"] == "accept", response.content

    http_call(0)
    with loadkit.captured() as http:
        http_call(1)
    http_statements = [q["sql"] for q in http.captured_queries]
    loadkit.print_statements("Whole HTTP request through Django (token auth, organization, evaluate)", http_statements)

    import envelopes.evaluation.fastroute as fastroute

    assert fastroute.answer(token, json.dumps(payment(f"rt-{tag}-fast-0")).encode()) is not None  # caches the token
    with loadkit.captured() as fast:
        assert fastroute.answer(token, json.dumps(payment(f"rt-{tag}-fast-1")).encode()) is not None
    fast_statements = [q["sql"] for q in fast.captured_queries]
    loadkit.print_statements("Fast route (what the ASGI server runs for a plain request)", fast_statements)
    return {
        "fast": len(fast_statements),
        "service": len(loadkit.data_statements(service_statements)),
        "service_all": len(service_statements),
        "http": len(loadkit.data_statements(http_statements)),
        "http_all": len(http_statements),
    }


def profile_requests(token: str, count: int, top: int = 35) -> None:
    """cProfile ``count`` HTTP evaluations through Django's test client, in this process."""
    from django.test import Client

    client = Client(HTTP_AUTHORIZATION=f"Bearer {token}")
    tag = uuid.uuid4().hex[:8]
    bodies = [json.dumps(payment(f"prof-{tag}-{n}")) for n in range(count + 50)]
    for body in bodies[:50]:
        client.post("/v1/evaluate", body, "application/json")
    profiler = cProfile.Profile()
    start = time.perf_counter()
    profiler.enable()
    for body in bodies[50:]:
        client.post("/v1/evaluate", body, "application/json")
    profiler.disable()
    elapsed = time.perf_counter() - start
    print(
        f"\nProfile: {count} HTTP evaluations in-process in {elapsed:.2f} s under cProfile "
        f"({elapsed / count * 1000:.2f} ms each, profiler overhead included)"
    )
    loadkit.print_profile(profiler, top)


def stage_breakdown(token: str, count: int) -> None:
    """Where one evaluation on the fast route spends its time, stage by stage (in-process:
    ``envelopes.evaluation.fastroute.answer``, the hot path's code for evaluation run
    synchronously, each evaluation committing alone)."""
    import envelopes.evaluation.engine as evaluation
    import envelopes.evaluation.fastroute as fastroute
    import evidence.services.chain as chain
    import governance.hotpath as hotpath

    tag = uuid.uuid4().hex[:8]
    bodies = [json.dumps(payment(f"stage-{tag}-{n}")).encode() for n in range(count + 50)]
    for body in bodies[:50]:
        assert fastroute.answer(token, body) is not None, "the fast route refused the bench request"
    timer = loadkit.StageTimer()
    stages = [
        (hotpath.tokens, "get", "token (cached; checked again in the write)"),
        (fastroute.EVALUATE, "parse", "request parsing and validation"),
        (evaluation, "request_hash", "request hash (RFC 8785 + SHA-256)"),
        (fastroute, "peek_snapshot", "authority snapshot (in memory)"),
        (evaluation, "decide", "decide (steps 2-10)"),
        (evaluation, "evaluate_policy", "  of which Rego policy (remembered decisions)"),
        (evaluation, "draft_rows", "event rows and hashes"),
        (chain, "event_hash", "  of which event hashes (RFC 8785 + SHA-256)"),
        (evaluation, "rows_json", "envelope and events as JSON"),
        (fastroute.EVALUATE, "record", "the one statement (round trip, commit included)"),
    ]
    for owner, attribute, label in stages:
        timer.wrap(owner, attribute, label)
    wall, cpu = time.perf_counter(), time.thread_time()
    try:
        for body in bodies[50:]:
            fastroute.answer(token, body)
    finally:
        wall, cpu = time.perf_counter() - wall, time.thread_time() - cpu
        timer.unwrap()
    print(f"\nStage breakdown of {count} in-process evaluations (ms per evaluation; CPU is this thread's):")
    print("\n| Stage | Wall ms | CPU ms | Calls per evaluation |")
    print("|---|---:|---:|---:|")
    print(f"| whole evaluation (`fastroute.answer`) | {wall / count * 1000:.2f} | {cpu / count * 1000:.2f} | 1 |")
    for label, (stage_wall, stage_cpu, calls) in timer.totals.items():
        print(f"| {label} | {stage_wall / count * 1000:.2f} | {stage_cpu / count * 1000:.2f} | {calls / count:.0f} |")


# --- main -----------------------------------------------------------------------------


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    loadkit.add_server_arguments(parser, "comma list of worker counts to try, e.g. 1,2,3,4 (overrides --workers)")
    loadkit.add_window_arguments(parser, 32, "clients")
    parser.add_argument("--client", choices=("httpx", "raw"), default="httpx", help="load client (default httpx)")
    parser.add_argument(
        "--connect-stagger",
        type=float,
        default=10.0,
        metavar="MS",
        help="milliseconds between the clients' connects, before the window (default 10; 0 = one burst)",
    )
    parser.add_argument("--client-processes", type=int, default=1, help="processes the clients are split over")
    parser.add_argument("--profile", type=int, default=0, metavar="N", help="cProfile N in-process evaluations")
    parser.add_argument("--breakdown", type=int, default=0, metavar="N", help="time the stages of N evaluations")
    parser.add_argument("--py-spy", metavar="PATH", help="py-spy executable: sample the workers in the first run")
    loadkit.add_run_arguments(parser, "round trips / profile only", "a target")
    return parser.parse_args(argv)


def measure(args, token: str, rows: list[dict]) -> bool:
    """The HTTP load (unless ``--no-load``), then the in-process figures; whether all went well."""
    ok = True
    if not args.no_load:
        loadkit.sweep(args, rows, f"concurrency={args.concurrency}", partial(measure_configuration, args, token))
        print_table(rows, args)
        ok = all(r["errors"] == 0 for r in rows)
        goal = f"≥ {THROUGHPUT_TARGET:,.0f} req/s with p99 ≤ {P99_TARGET_MS:.0f} ms"
        predicates = loadkit.fast_enough(THROUGHPUT_TARGET, P99_TARGET_MS)
        ok = loadkit.report_best(rows, args, "req/s", goal, *predicates) and ok
    loadkit.setup_django()
    trips = count_round_trips(token)
    # every statement, BEGIN / SAVEPOINT / RELEASE / COMMIT included, is one network round trip
    verdict = "met" if trips["service_all"] <= ROUND_TRIP_TARGET else "not met"
    print(
        f"\nRound trips per evaluation: service {trips['service_all']} "
        f"({trips['service']} data statements + {trips['service_all'] - trips['service']} transaction control; "
        f"target ≤ {ROUND_TRIP_TARGET}: {verdict}); whole HTTP request {trips['http_all']} "
        f"({trips['http']} data statements); fast route {trips['fast']} (token cached)"
    )
    if args.strict and trips["service_all"] > ROUND_TRIP_TARGET:
        ok = False
    if args.breakdown:
        stage_breakdown(token, args.breakdown)
    if args.profile:
        profile_requests(token, args.profile)
    return ok


def main(argv=None) -> int:
    args = parse_args(argv)
    loadkit.begin_load(args)
    token = prepare_database()
    return loadkit.run_main(partial(measure, args, token), partial(print_table, args=args))


if __name__ == "__main__":
    sys.exit(main())
