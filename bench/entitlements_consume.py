"""Benchmark: ``POST /api/entitlement/consume`` throughput and latency over HTTP (issue 13).

Target: ≥ 1,000 consume calls/s across distinct entitlements on PostgreSQL, through the
shared hot path (``entitlements/fastroute.py``: group commit of ``mandate_consume_runs``).

What the script does:

1. migrates the database in ``DATABASE_URL`` (PostgreSQL on loopback; ``--fresh`` drops and
   recreates it first) and, in organization ``bench-gbx``, makes ``--people`` N people, each
   with an email, an API token and a balance of their own (``--runs`` runs under
   ``gbx_bench``: distinct entitlements);
2. starts the real server (``uvicorn governance.asgi:application``, ``--workers`` N, DEBUG
   off, LOG_LEVEL=WARNING, no access log; ``bench/loadkit.py``'s ``Server``);
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
import os
import sys
import time
import uuid
from collections import Counter
from datetime import timedelta
from functools import partial
from urllib.parse import urlparse

import loadkit

THROUGHPUT_TARGET = 1000.0
CONSUME_PATH = "/api/entitlement/consume"
ORGANIZATION = "bench-gbx"
PLAN = "gbx_bench"
CONNECT_STAGGER = 0.02  # seconds between the clients' connects
CORRECTNESS_RUNS, CORRECTNESS_CALLS = 10, 50


# --- database ------------------------------------------------------------------------------


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
    loadkit.close_connection()
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
    loadkit.close_connection()
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
    loadkit.close_connection()

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
    loadkit.close_connection()
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


class Consumes(loadkit.Calls):
    """One client's consumes for one person, each a fresh run_id. Anything but a 200 with the
    run_id and ``runs_remaining`` is an error."""

    def __init__(self, tally, secret, host, port, tag):
        super().__init__(tally)
        self.tag = tag
        self.head = (
            f"POST {CONSUME_PATH} HTTP/1.1\r\nHost: {host}:{port}\r\nAuthorization: Bearer {secret}\r\n"
            "Content-Type: application/json\r\nConnection: keep-alive\r\nContent-Length: "
        ).encode()

    def request(self, sequence: int) -> tuple[bytes, ...]:
        body = b'{"run_id":"' + f"{self.tag}-{sequence}".encode() + b'"}'
        return (self.head + str(len(body)).encode() + b"\r\n\r\n" + body,)

    def answered(self, sequence: int, status: int, content: bytes) -> None:
        answer = json.loads(content)
        if (
            status == 200
            and answer.get("run_id") == f"{self.tag}-{sequence}"
            and isinstance(answer.get("runs_remaining"), int)
        ):
            self.tally.ok()
        else:
            self.tally.error(f"{status} {answer.get('error', '')}".strip())


def make_consumers(share):
    """In a load process: a keep-alive connection per client."""
    clients, server_url = share
    parsed = urlparse(server_url)
    tally = loadkit.Tally()
    return [
        partial(
            loadkit.keep_alive_client,
            parsed.hostname,
            parsed.port,
            connect_at,
            Consumes(tally, secret, parsed.hostname, parsed.port, tag),
        )
        for secret, tag, connect_at in clients
    ], tally


def run_load(secrets, concurrency, server_url, seconds, processes, run_tag, meter=None) -> dict:
    """``concurrency`` clients, client k consuming for person k mod N, in ``processes``
    processes; they connect ``CONNECT_STAGGER`` s apart, then load together for ``seconds``."""
    connect_times, start_at = loadkit.schedule(concurrency, CONNECT_STAGGER)
    clients = [(secrets[k % len(secrets)], f"{run_tag}-{k}", connect_times[k]) for k in range(concurrency)]
    shares = [(clients[i::processes], server_url) for i in range(processes) if clients[i::processes]]
    return loadkit.run_load(make_consumers, shares, seconds, start_at, meter=meter)


# --- in-process: round trips of one consume ------------------------------------------------------


def count_round_trips(secret: str) -> list[str]:
    """The statements of one consume through the hot path's code, its token cached."""
    from entitlements.fastroute import answer

    tag = uuid.uuid4().hex[:8]
    assert answer(secret, json.dumps({"run_id": f"rt-{tag}-0"}).encode()) is not None  # caches the token
    with loadkit.captured() as captured:
        assert answer(secret, json.dumps({"run_id": f"rt-{tag}-1"}).encode()) is not None
    statements = [query["sql"] for query in captured.captured_queries]
    loadkit.print_statements("One consume through the hot path's code (token cached)", statements)
    loadkit.close_connection()
    return statements


# --- runs ------------------------------------------------------------------------------------------


def measure_configuration(args, secrets: list[str], problems: list[str], workers: int) -> list[dict]:
    """One server: the correctness figure (its problems added to ``problems``), then the runs."""
    database_url = os.environ["DATABASE_URL"]
    server = loadkit.Server(workers, "entitlements_consume")
    rows = []
    try:
        server.start()
        problems += fifty_at_once(server.url)
        meter = loadkit.CpuMeter(server, database_url)
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
            loadkit.print_call_run(result, "consumes/s", "consume", "consumes", "CHECK")
    finally:
        server.close()
    return rows


COLUMNS = loadkit.call_columns("Consumes/s", "consume", "Consumes", postgres_per_call=True)


def print_table(rows: list[dict], args) -> None:
    title = (
        f"POST {CONSUME_PATH}, {args.concurrency} clients over {args.people} people (each their own "
        f"balance), {args.duration:.0f} s per run"
    )
    loadkit.print_table(title, COLUMNS, rows)


def meets_target(row: dict) -> bool:
    return row["rps"] >= THROUGHPUT_TARGET and loadkit.run_passed(row)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    loadkit.add_server_arguments(parser, "comma list of worker counts, e.g. 1,2 (overrides --workers)")
    parser.add_argument("--people", type=int, default=64, help="people, each with a token and a balance (default 64)")
    parser.add_argument("--runs", type=int, default=1_000_000, help="runs added to each balance (default 1,000,000)")
    loadkit.add_window_arguments(parser, 32, "clients")
    parser.add_argument("--client-processes", type=int, default=1, help="processes the clients are split over")
    loadkit.add_run_arguments(parser, "round trips only", "the target")
    return parser.parse_args(argv)


def measure(args, secrets: list[str], rows: list[dict]) -> bool:
    """The HTTP load (unless ``--no-load``), then the round trips; whether all went well."""
    problems: list[str] = []
    ok = True
    if not args.no_load:
        header = f"clients={args.concurrency}, people={args.people}"
        loadkit.sweep(args, rows, header, partial(measure_configuration, args, secrets, problems))
        print_table(rows, args)
        ok = not problems and all(loadkit.run_passed(r) for r in rows)
        goal = f"≥ {THROUGHPUT_TARGET:,.0f}/s"
        ok = loadkit.report_best(rows, args, "consumes/s", goal, loadkit.run_passed, meets_target) and ok
    statements = count_round_trips(secrets[0])
    print(f"\nRound trips per consume on the hot path (transaction control included): {len(statements)}")
    return ok


def main(argv=None) -> int:
    args = parse_args(argv)
    loadkit.begin_load(args, ("people", "concurrency", "client_processes", "runs"))
    loadkit.setup_django()
    secrets = prepare_database(args.people, args.runs)
    loadkit.close_connection()
    return loadkit.run_main(partial(measure, args, secrets), partial(print_table, args=args))


if __name__ == "__main__":
    sys.exit(main())
