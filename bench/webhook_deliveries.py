"""Benchmark: signed webhook deliveries through a real Celery worker (issue 5, "Performance").

Target: 1,000 decisions produce 1,000 signed deliveries to a local receiver at ≥ 200
deliveries/s with the default worker settings; report the first-attempt latency (p50/p99)
after the decision.

What the script does:

1. migrates the database in ``DATABASE_URL`` (PostgreSQL on loopback), creates a fresh
   organization ``bench-webhooks-…`` with a channel owner, an approver and a channel
   (``create_invite`` + ``register_channel``), all through ``envelopes.services``;
2. starts a receiver in its own process: a small asyncio HTTP/1.1 server on 127.0.0.1 that
   verifies both signatures of every POST (``X-AIGOS-Signature`` and Standard Webhooks'
   ``webhook-signature``), answers 200 and records the arrival time;
3. submits ``2 × --decisions`` + 20 approval requests whose ``return_webhook`` is the
   receiver (``MANDATE_WEBHOOK_ALLOW_PRIVATE=true``, as in ``make run``);
4. starts a real worker (``celery -A governance worker``: default settings, i.e. the prefork
   pool with one process per CPU, on Redis; ``--db-reuse N`` sets ``CELERY_DB_REUSE_MAX``,
   see ``start_worker``) and approves 20 requests to warm it up;
5. **drain**: tells the worker to stop consuming, approves ``--decisions`` requests with
   ``act()`` from ``--threads`` threads (each decision writes its delivery row and queues its
   task), lets the worker consume again and measures deliveries/s from the first arrival to
   the last, and the CPU used per delivery by the worker, PostgreSQL and the receiver (and
   by everything else on the machine: other work skews the figure);
6. **live**: approves ``--decisions`` more while the worker runs (optionally paced at
   ``--rate`` decisions/s) and measures, per delivery, the time from the decision
   (``decision_time`` in the payload, set inside the decision's transaction) to its arrival
   at the receiver: p50/p90/p99/max, and deliveries/s from the first decision to the last
   arrival;
7. checks that every delivery row is ``delivered`` after one attempt, that the receiver saw
   each delivery id exactly once and that every signature verified; prints a markdown table.

The worker and the receiver are stopped at the end, on Ctrl-C, on errors and at
``--time-limit``. Messages left in the Redis database from an aborted run are purged first.
The runs write envelopes and audit events and leave them (the ledger is append-only): use a
scratch database.

Usage:

    createdb -h 127.0.0.1 -U postgres h_webhooks
    DATABASE_URL=postgres://postgres@127.0.0.1:5432/h_webhooks SECRET_KEY=bench \\
        .venv/bin/python bench/webhook_deliveries.py [--decisions 1000] [--threads 4] [--rate 0] \\
        [--db-reuse N]

Exit status: 0 when every delivery arrived once, signed correctly (and, with ``--strict``,
the drain rate met the target).
"""

import argparse
import asyncio
import base64
import datetime
import hashlib
import hmac
import json
import multiprocessing
import os
import platform
import signal
import subprocess
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import loadkit

ROOT = loadkit.ROOT
TARGET_PER_SECOND = 200.0
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/7"
WARMUP = 20


def configure_environment() -> None:
    """The server's environment (``loadkit.server_env``) in this process and the worker's,
    on a Redis database of its own by default."""
    loadkit.scratch_database_url()
    os.environ.setdefault("REDIS_URL", DEFAULT_REDIS_URL)
    loadkit.check_loopback(os.environ["REDIS_URL"], "REDIS_URL")
    os.environ.update(loadkit.server_env())
    os.environ["MANDATE_WEBHOOK_ALLOW_PRIVATE"] = "true"


# --- the receiver (its own process, so its clock readings do not wait for our GIL) ----------


def receiver_main(secret: str, port_pipe, records) -> None:
    aigos_key = secret.encode()
    standard_key = base64.b64decode(secret.removeprefix("whsec_"))

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            arrival = time.time()
            headers = {}
            for line in head.decode("latin-1").split("\r\n")[1:]:
                name, _, value = line.partition(":")
                if name:
                    headers[name.strip().lower()] = value.strip()
            body = await reader.readexactly(int(headers.get("content-length", "0")))
            delivery_id = headers.get("x-aigos-delivery", "")
            timestamp = headers.get("webhook-timestamp", "")
            aigos = "sha256=" + hmac.new(aigos_key, body, hashlib.sha256).hexdigest()
            signed = f"{delivery_id}.{timestamp}.".encode() + body
            standard = "v1," + base64.b64encode(hmac.new(standard_key, signed, hashlib.sha256).digest()).decode()
            payload = json.loads(body)
            records.put(
                {
                    "delivery_id": delivery_id,
                    "request_id": payload.get("request_id"),
                    "decision_time": payload.get("decision_time"),
                    "arrival": arrival,
                    "signed": hmac.compare_digest(aigos, headers.get("x-aigos-signature", ""))
                    and hmac.compare_digest(standard, headers.get("webhook-signature", "")),
                }
            )
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, ValueError):
            pass
        finally:
            writer.close()

    async def serve() -> None:
        server = await asyncio.start_server(handle, "127.0.0.1", 0, backlog=1024)
        port_pipe.send(server.sockets[0].getsockname()[1])
        async with server:
            await server.serve_forever()

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    asyncio.run(serve())


class Arrivals:
    """Records from the receiver, drained into a dict keyed by delivery id."""

    def __init__(self, queue):
        self.queue = queue
        self.first: dict[str, dict] = {}
        self.duplicates = 0
        self.bad_signatures = 0

    def wait_for(self, request_ids: set[str], timeout: float) -> list[dict]:
        deadline = time.monotonic() + timeout
        seen = {r["request_id"]: r for r in self.first.values() if r["request_id"] in request_ids}
        while len(seen) < len(request_ids) and time.monotonic() < deadline:
            try:
                record = self.queue.get(timeout=0.2)
            except Exception:  # queue.Empty
                continue
            if record["delivery_id"] in self.first:
                self.duplicates += 1
                continue
            self.first[record["delivery_id"]] = record
            self.bad_signatures += not record["signed"]
            if record["request_id"] in request_ids:
                seen[record["request_id"]] = record
        return list(seen.values())


# --- the worker and CPU accounting (Linux /proc) ------------------------------------------


def start_worker(db_reuse: int | None) -> subprocess.Popen:
    """``celery -A governance worker`` with its defaults (prefork, one process per CPU).

    Celery's Django fixup closes every database connection before and after each task (in
    prefork workers also Django's connection pool), so each task opens a new PostgreSQL
    connection, unless ``CELERY_DB_REUSE_MAX`` is set (the settings default it to 1,000).
    ``db_reuse`` overrides it through the environment; 0 shows the cost of not reusing."""
    command = [sys.executable, "-m", "celery", "-A", "governance", "worker", "--loglevel", "WARNING"]
    command += ["--hostname", f"bench-webhooks-{uuid.uuid4().hex[:6]}@%h"]
    env = os.environ.copy()
    if db_reuse is not None:
        env["CELERY_DB_REUSE_MAX"] = str(db_reuse)
    return subprocess.Popen(command, cwd=ROOT, env=env, start_new_session=True)


def stop(process: subprocess.Popen | None) -> None:
    if process is None or process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def cpu_seconds(pids) -> float:
    return sum(loadkit.process_cpu(pid) for pid in pids)


def process_group(leader: int) -> list[int]:
    return [
        int(e.name)
        for e in Path("/proc").iterdir()
        if e.name.isdigit() and (loadkit.stat_fields(int(e.name)) or [0, 0, 0])[2] == str(leader)
    ]


def postgres_backends() -> list[int]:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT pid FROM pg_stat_activity WHERE datname = current_database()")
        return [row[0] for row in cursor.fetchall()]


def redis_servers() -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text().strip() == "redis-server":
                    pids.append(int(entry.name))
            except OSError:
                pass
    return pids


class CpuMeter:
    """CPU seconds of each part of the pipeline, and of the machine."""

    PARTS = ("worker", "postgres", "redis", "receiver", "bench")

    def __init__(self, worker: subprocess.Popen, receiver_pid: int):
        self.worker, self.receiver_pid, self.redis = worker, receiver_pid, redis_servers()

    def snapshot(self) -> dict:
        return {
            "worker": cpu_seconds(process_group(self.worker.pid)),
            "postgres": cpu_seconds(postgres_backends()),
            "redis": cpu_seconds(self.redis),
            "receiver": cpu_seconds([self.receiver_pid]),
            "bench": cpu_seconds([os.getpid()]),
            "machine": loadkit.machine_busy()[0],
            "at": time.monotonic(),
        }


# --- the scenario ---------------------------------------------------------------------------


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(fraction * (len(ordered) - 1))))]


def setup():
    from django.core.management import call_command

    from envelopes.requests.channels import create_invite, register_channel
    from governance.choices import Role
    from governance.services.people import create_person, ensure_organization

    call_command("migrate", verbosity=0)
    slug = f"bench-webhooks-{uuid.uuid4().hex[:8]}"
    organization = ensure_organization(slug, slug)
    owner = create_person(organization, f"{slug}-owner")
    approver = create_person(organization, f"{slug}-approver", roles=[Role.GOVERNANCE_APPROVER])
    _, token = create_invite(owner)
    channel, _, secret = register_channel(token, name="bench agent")
    return organization, approver, channel, secret


def submit_requests(channel, url: str, count: int) -> list[str]:
    from envelopes.requests.submissions import submit_request

    ids = []
    for n in range(count):
        data = {
            "type": "approval_request",
            "title": f"bench request {n}",
            "risk_level": "low",
            "payload": {"n": n},
            "return_mode": "webhook",
            "return_webhook": url,
        }
        ids.append(str(submit_request(channel, data, json.dumps(data)).pk))
    return ids


def decide(organization, approver, request_ids: list[str], threads: int, rate: float, committed=None) -> float:
    """Approve every request from ``threads`` threads (paced at ``rate``/s when > 0); returns
    the elapsed seconds. ``committed`` (a dict) gets each request's wall-clock time when
    ``act()`` returned: committed, its task queued."""
    from django.db import connections

    from envelopes.requests.decisions import act

    started = time.perf_counter()
    lock = threading.Lock()
    cursor = iter(enumerate(request_ids))

    def work():
        try:
            while True:
                with lock:
                    item = next(cursor, None)
                if item is None:
                    return
                index, request_id = item
                if rate > 0:
                    delay = started + index / rate - time.perf_counter()
                    if delay > 0:
                        time.sleep(delay)
                act(organization.pk, request_id, approver, "approve")
                if committed is not None:
                    committed[request_id] = time.time()
        finally:
            connections.close_all()

    with ThreadPoolExecutor(threads) as pool:
        for future in [pool.submit(work) for _ in range(threads)]:
            future.result()
    return time.perf_counter() - started


def check_rows(request_ids: list[str]) -> dict:
    from django.db.models import Count

    from envelopes.models import Delivery

    rows = Delivery.objects.filter(request_id__in=request_ids)
    return {
        "rows": rows.count(),
        "by_status": dict(rows.order_by().values("status").annotate(n=Count("pk")).values_list("status", "n")),
        "more_than_one_attempt": rows.filter(attempts__gt=1).count(),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--decisions", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=4, help="threads making decisions (default 4)")
    parser.add_argument("--rate", type=float, default=0, help="pace live decisions at this many per second (0: no)")
    parser.add_argument(
        "--db-reuse",
        type=int,
        default=None,
        help="run the worker with CELERY_DB_REUSE_MAX=N (default: the settings' value; 0: no reuse)",
    )
    parser.add_argument("--strict", action="store_true", help="exit 1 when the drain rate misses the target")
    parser.add_argument("--time-limit", type=float, default=900)
    args = parser.parse_args()

    configure_environment()
    import django

    django.setup()
    from governance.celery import app as celery_app

    def out_of_time(*_):
        raise SystemExit(f"time limit of {args.time_limit:g} s reached")

    signal.signal(signal.SIGALRM, out_of_time)
    signal.alarm(int(args.time_limit))

    n = args.decisions
    worker = receiver = None
    context = multiprocessing.get_context("spawn")
    try:
        print(
            f"# Webhook deliveries — {datetime.datetime.now():%Y-%m-%d %H:%M}, {platform.node()}, "
            f"{os.cpu_count()} CPUs, Python {platform.python_version()}, load {os.getloadavg()[0]:.2f}, "
            f"worker CELERY_DB_REUSE_MAX: {'settings' if args.db_reuse is None else args.db_reuse}"
        )
        started = time.perf_counter()
        organization, approver, channel, secret = setup()
        records = context.Queue()
        parent_end, child_end = context.Pipe()
        receiver = context.Process(target=receiver_main, args=(secret, child_end, records), daemon=True)
        receiver.start()
        port = parent_end.recv()
        url = f"http://127.0.0.1:{port}/hook"
        purged = celery_app.control.purge()
        warm_ids = submit_requests(channel, url, WARMUP)
        drain_ids = submit_requests(channel, url, n)
        live_ids = submit_requests(channel, url, n)
        print(
            f"setup: {2 * n + WARMUP} requests submitted in {time.perf_counter() - started:.1f} s "
            f"(receiver on port {port}; {purged} stale messages purged)"
        )
        arrivals = Arrivals(records)

        # The worker, warmed up by a few deliveries (its processes hold their connections).
        worker = start_worker(args.db_reuse)
        decide(organization, approver, warm_ids, 1, 0)
        if len(arrivals.wait_for(set(warm_ids), timeout=120)) < WARMUP:
            raise SystemExit("the worker did not deliver the warm-up decisions")
        meter = CpuMeter(worker, receiver.pid)

        # 1. drain: the worker stops consuming, the decisions fill the queue, the worker resumes.
        celery_app.control.cancel_consumer("celery", reply=True)
        decide_seconds = decide(organization, approver, drain_ids, args.threads, 0)
        print(f"drain: {n} decisions in {decide_seconds:.1f} s ({n / decide_seconds:.0f}/s) while the worker waited")
        before = meter.snapshot()
        celery_app.control.add_consumer("celery", reply=True)
        got = arrivals.wait_for(set(drain_ids), timeout=300)
        after = meter.snapshot()
        if len(got) < n:
            raise SystemExit(f"drain: only {len(got)} of {n} deliveries arrived")
        times = sorted(r["arrival"] for r in got)
        drain_rate = (n - 1) / (times[-1] - times[0])
        # PostgreSQL: backends alive at both ends of the window (a connection opened and
        # closed per task is not seen).
        window = after["at"] - before["at"]
        used = {k: after[k] - before[k] for k in (*CpuMeter.PARTS, "machine")}
        others = max(0.0, used["machine"] - sum(used[k] for k in CpuMeter.PARTS))

        # 2. live: decide while the worker runs; time each delivery from its decision.
        live_started, committed = time.time(), {}
        decide_seconds = decide(organization, approver, live_ids, args.threads, args.rate, committed)
        got = arrivals.wait_for(set(live_ids), timeout=300)
        if len(got) < n:
            raise SystemExit(f"live: only {len(got)} of {n} deliveries arrived")
        # From decision_time (set inside the decision's transaction, before its audit events
        # and commit) and from the moment act() returned (committed, task queued).
        latencies = [
            (r["arrival"] - datetime.datetime.fromisoformat(r["decision_time"]).timestamp()) * 1000 for r in got
        ]
        after_commit = [(r["arrival"] - committed[r["request_id"]]) * 1000 for r in got]
        live_rate = n / (max(r["arrival"] for r in got) - live_started)
        arrivals.wait_for(set(), timeout=2)  # late duplicates, if any
        rows = check_rows(drain_ids + live_ids)

        print()
        print(
            "| phase | decisions/s | deliveries | deliveries/s | first attempt after decision p50 / p90 / p99 / max |"
        )
        print("|---|---|---|---|---|")
        print(f"| drain (queue filled, then consumed) | — | {n} | **{drain_rate:.0f}** | — |")
        paced = f", paced at {args.rate:g}/s" if args.rate else ""
        threads = f"{args.threads} deciding thread{'s' if args.threads > 1 else ''}"
        print(
            f"| live ({threads}{paced}) | {n / decide_seconds:.0f} | {n} | {live_rate:.0f} | "
            f"**{percentile(latencies, 0.5):.1f}** / {percentile(latencies, 0.9):.1f} / "
            f"**{percentile(latencies, 0.99):.1f}** / {max(latencies):.1f} ms |"
        )
        print(
            f"| live, measured from the commit (act() returned) | | | | "
            f"{percentile(after_commit, 0.5):.1f} / {percentile(after_commit, 0.9):.1f} / "
            f"{percentile(after_commit, 0.99):.1f} / {max(after_commit):.1f} ms |"
        )
        print()
        parts = ", ".join(f"{k} {used[k] / n * 1000:.2f}" for k in CpuMeter.PARTS)
        print(
            f"drain CPU per delivery (ms): {parts}; other processes used {others / window:.2f} of "
            f"{os.cpu_count()} CPUs during the {window:.1f} s window"
        )
        print(
            f"rows: {rows['rows']} deliveries, {rows['by_status']}, {rows['more_than_one_attempt']} retried; "
            f"receiver: {arrivals.duplicates} duplicate POSTs, {arrivals.bad_signatures} bad signatures"
        )
        ok = (
            rows["by_status"] == {"delivered": 2 * n}
            and not rows["more_than_one_attempt"]
            and not arrivals.duplicates
            and not arrivals.bad_signatures
        )
        if not ok:
            print("FAILED: not every delivery arrived exactly once, signed")
            return 1
        if args.strict and drain_rate < TARGET_PER_SECOND:
            print(f"target missed: {drain_rate:.0f} < {TARGET_PER_SECOND:.0f} deliveries/s")
            return 1
        return 0
    finally:
        signal.alarm(0)
        stop(worker)
        if receiver is not None and receiver.is_alive():
            receiver.terminate()
            receiver.join(timeout=5)


if __name__ == "__main__":
    sys.exit(main())
