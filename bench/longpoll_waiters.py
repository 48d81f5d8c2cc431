"""Benchmark: 10,000 concurrent long-poll waiters on one ASGI server process (issue 5, "Performance").

Targets: one server process (uvicorn, 1 worker) holds 10,000 concurrent
``GET /api/requests/{id}/wait``; deciding all of them wakes every waiter within 2 s; a single
decision wakes its waiter in p50 ≤ 50 ms; memory per waiter reported.

What the script does:

1. migrates the database in ``DATABASE_URL`` (PostgreSQL on loopback) and creates a fresh
   organization ``bench-longpoll-…`` with a channel owner, an approver and a channel, then
   submits ``--waiters`` requests through ``envelopes.requests.submissions.submit_request``
   (in ``--setup-processes`` processes);
2. raises the open-file limit (``resource.setrlimit``) and starts the real server
   (``uvicorn governance.asgi:application --workers 1``, DEBUG off, LOG_LEVEL=WARNING,
   ``REDIS_URL`` defaulting to ``redis://127.0.0.1:6379/5``) on 127.0.0.1, waits for
   ``/readyz``, warms the long-poll route up and reads the server's baseline RSS and
   threads from ``/proc/<pid>/status``;
3. starts ``--client-processes`` client processes (minimal asyncio HTTP/1.1 clients, one
   connection per waiter) that send one ``/wait?timeout=300`` per request and wait (a 408
   is re-sent, as an agent would); once all are sent and ``--settle`` seconds have
   passed, reads the server's RSS and threads with every waiter parked, and its CPU use
   over ``--idle-window`` seconds (the periodic re-check);
4. decides ``--singles`` requests one at a time, from a separate decider process, through
   ``envelopes.requests.decisions.act`` (the waiters of all the others still parked); the
   decider stamps the moment each decision commits (a first ``on_commit`` hook, before
   the bus publishes); wake latency = the client's receive time − that stamp;
5. decides all the remaining requests through ``act`` in ONE transaction (so every
   decision commits at once), stamps the commit, and measures the time until the last
   waiter received its 200; also the decider's time to publish every notification;
6. checks that every waiter got a 200 with status ``approved``; prints a table; stops
   the server (also on Ctrl-C, errors and ``--time-limit``).

Usage:

    createdb -h 127.0.0.1 -U postgres h_aios_api
    DATABASE_URL=postgres://postgres@127.0.0.1:5432/h_aios_api SECRET_KEY=bench \\
        .venv/bin/python bench/longpoll_waiters.py [--waiters 10000] [--client-processes 4] [--singles 200]

The runs leave their requests and audit events (the ledger is append-only): use a scratch
database. Exit status: 0 when every waiter was answered correctly (and, with ``--strict``,
the targets were met).
"""

import argparse
import asyncio
import datetime
import json
import multiprocessing
import os
import platform
import resource
import signal
import statistics
import subprocess
import sys
import threading
import time
import uuid
from contextlib import suppress
from pathlib import Path

import loadkit

ROOT = loadkit.ROOT
WAKE_ALL_TARGET_S = 2.0
SINGLE_P50_TARGET_MS = 50.0
WAIT_SECONDS = 300


# --- environment, database and server ---------------------------------------------------


def configure_environment() -> None:
    """One environment for this process, the server and every child process: the server's."""
    os.environ.update(loadkit.server_env())


def setup_django() -> None:
    import django

    django.setup()


def raise_fd_limit(needed: int) -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < needed:
        raise SystemExit(f"the open-file hard limit is {hard}; {needed} are needed (ulimit -Hn)")
    target = needed if hard == resource.RLIM_INFINITY else max(soft, min(hard, needed * 2))
    resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return target


def submit_batch(channel_id: str, count: int) -> list[str]:
    """Child process: submit ``count`` requests on the channel."""
    setup_django()
    from envelopes.models import Channel
    from envelopes.requests.submissions import submit_request

    channel = Channel.objects.select_related("organization", "owner").get(pk=channel_id)
    data = {"type": "approval_request", "title": "bench: may I?", "long_poll_timeout_seconds": WAIT_SECONDS}
    raw = json.dumps(data)
    return [str(submit_request(channel, data, raw).pk) for _ in range(count)]


def prepare(waiters: int, processes: int) -> dict:
    setup_django()
    from django.db import connections

    from envelopes.requests.channels import create_invite, register_channel
    from governance.choices import Role
    from governance.services.people import create_person, ensure_organization

    tag = uuid.uuid4().hex[:8]
    organization = ensure_organization(f"bench-longpoll-{tag}", f"Long-poll bench {tag}")
    owner = create_person(organization, f"bench-owner-{tag}")
    approver = create_person(organization, f"bench-approver-{tag}", roles=[Role.GOVERNANCE_APPROVER])
    _, token = create_invite(owner)
    channel, api_key, _ = register_channel(token, name=f"bench {tag}")
    connections.close_all()

    started = time.perf_counter()
    shares = [waiters // processes + (1 if i < waiters % processes else 0) for i in range(processes)]
    context = multiprocessing.get_context("spawn")
    with context.Pool(processes) as pool:
        batches = pool.starmap(submit_batch, [(str(channel.pk), share) for share in shares if share])
    request_ids = [request_id for batch in batches for request_id in batch]
    elapsed = time.perf_counter() - started
    print(f"submitted {len(request_ids)} requests in {elapsed:.1f} s ({len(request_ids) / elapsed:.0f}/s)")
    return {
        "organization_id": str(organization.pk),
        "approver_id": str(approver.pk),
        "api_key": api_key,
        "request_ids": request_ids,
    }


# --- /proc --------------------------------------------------------------------------------


def process_status(pid: int) -> dict:
    """RSS (MiB), peak RSS (MiB) and threads from /proc/<pid>/status."""
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        values[key] = value.strip()
    return {
        "rss_mib": int(values["VmRSS"].split()[0]) / 1024,
        "hwm_mib": int(values["VmHWM"].split()[0]) / 1024,
        "threads": int(values["Threads"]),
        "fds": len(os.listdir(f"/proc/{pid}/fd")),
    }


class Sampler(threading.Thread):
    """The server's peak threads and RSS, sampled every 100 ms."""

    def __init__(self, pid: int):
        super().__init__(daemon=True)
        self.pid, self.max_threads, self.max_rss = pid, 0, 0.0
        self.stopped = threading.Event()

    def run(self):
        while not self.stopped.wait(0.1):
            with suppress(OSError):
                status = process_status(self.pid)
                self.max_threads = max(self.max_threads, status["threads"])
                self.max_rss = max(self.max_rss, status["rss_mib"])


# --- the waiters (client processes) ---------------------------------------------------------


async def _read_response(reader) -> tuple[int, bytes]:
    status_line = await reader.readline()
    if not status_line:
        raise ConnectionError("the server closed the connection")
    status = int(status_line.split()[1])
    length = 0
    while True:
        line = await reader.readline()
        if line in (b"\r\n", b"\n", b""):
            break
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    return status, await reader.readexactly(length)


async def _wait_one(port, api_key, request_id, connect_slots, sent, results):
    async with connect_slots:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    request = (
        f"GET /api/requests/{request_id}/wait?timeout={WAIT_SECONDS} HTTP/1.1\r\n"
        f"Host: 127.0.0.1:{port}\r\nAuthorization: Bearer {api_key}\r\n\r\n"
    ).encode()
    timeouts = 0
    try:
        while True:
            writer.write(request)
            await writer.drain()
            if not timeouts:
                sent.append(request_id)
            status, body = await _read_response(reader)
            if status != 408:
                break
            timeouts += 1  # the decision is not in yet: ask again, as an agent would
        woke = time.time()
        decided = json.loads(body).get("status") if status == 200 else None
        results.append((request_id, status, decided, woke, timeouts))
    except Exception as exc:
        results.append((request_id, -1, repr(exc), time.time(), timeouts))
    finally:
        writer.close()


async def _waiters(port, api_key, request_ids, pipe):
    connect_slots = asyncio.Semaphore(200)
    sent, results = [], []
    tasks = [asyncio.ensure_future(_wait_one(port, api_key, r, connect_slots, sent, results)) for r in request_ids]
    while len(sent) + len(results) < len(request_ids):
        await asyncio.sleep(0.05)
    pipe.send(("sent", len(sent)))
    await asyncio.gather(*tasks, return_exceptions=True)
    pipe.send(("done", results))


def client_process(port, api_key, request_ids, pipe):
    with suppress(ImportError):
        import uvloop

        uvloop.install()
    asyncio.run(_waiters(port, api_key, request_ids, pipe))


# --- the decider (a separate process, through the service) ---------------------------------


def decider_process(organization_id, approver_id, pipe):
    setup_django()
    from django.db import transaction

    from envelopes.requests import bus
    from envelopes.requests.decisions import act
    from envelopes.services.decide import Actor, Decision, decide_many
    from governance.models import Person

    approver = Person.objects.get(pk=approver_id)
    actor = Actor.of_person(approver)
    pipe.send(("ready",))
    while True:
        command, request_ids = pipe.recv()
        if command == "stop":
            return
        stamps = {}
        started = time.perf_counter()
        with transaction.atomic():
            # The first on_commit hook runs right after COMMIT, before the bus publishes.
            transaction.on_commit(lambda stamps=stamps: stamps.setdefault("committed", time.time()))
            if command == "decide-at-once":
                # The bulk decision through the core's one decision path, in batches.
                for start in range(0, len(request_ids), 500):
                    batch = request_ids[start : start + 500]
                    outcomes = decide_many(organization_id, [(rid, actor, Decision("approve")) for rid in batch])
                    refused = [outcome.error for outcome in outcomes if outcome.error is not None]
                    if refused:
                        raise SystemExit(f"decisions refused: {refused[:3]}")
            else:
                for request_id in request_ids:
                    act(organization_id, request_id, approver, "approve")
            deciding = time.perf_counter() - started
            if command == "decide-at-once":
                pipe.send(("ready to commit",))
                pipe.recv()  # the parent starts measuring, then lets us commit
        bus.flush(timeout=30)  # the publisher thread has sent every notification to Redis
        published = time.time()
        pipe.send(("decided", stamps["committed"], published, deciding))


# --- the run ---------------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def run(args) -> int:
    loadkit.scratch_database_url()
    configure_environment()
    loadkit.check_loopback(os.environ["REDIS_URL"], "REDIS_URL")
    fd_limit = raise_fd_limit(args.waiters + 1000)
    print(f"open-file limit raised to {fd_limit}")

    loadkit.manage("migrate", "-v0")
    data = prepare(args.waiters, args.setup_processes)
    request_ids = data["request_ids"]
    singles, bulk = request_ids[: args.singles], request_ids[args.singles :]

    server = loadkit.Server(1, "longpoll_waiters", options=("--backlog", "4096"))
    context = multiprocessing.get_context("spawn")
    decider_pipe, decider_end = context.Pipe()
    decider = context.Process(
        target=decider_process, args=(data["organization_id"], data["approver_id"], decider_end), daemon=True
    )
    clients = []
    spy = None
    try:
        server.start()
        import httpx

        # Warm-up: the route, its lookup threads and the Redis subscriber exist before the baseline.
        headers = {"Authorization": f"Bearer {data['api_key']}"}
        for request_id in request_ids[:5]:
            httpx.get(f"{server.url}/api/requests/{request_id}/wait?timeout=0.2", headers=headers, timeout=10)
        time.sleep(1.0)
        baseline = process_status(server.pid)
        print(f"server pid {server.pid}: baseline {baseline}")
        sampler = Sampler(server.pid)
        sampler.start()

        decider.start()
        assert decider_pipe.recv() == ("ready",)

        shares = [request_ids[i :: args.client_processes] for i in range(args.client_processes)]
        connect_started = time.perf_counter()
        for share in shares:
            parent_end, child_end = context.Pipe()
            process = context.Process(
                target=client_process, args=(server.port, data["api_key"], share, child_end), daemon=True
            )
            process.start()
            clients.append((process, parent_end))
        sent = sum(pipe.recv()[1] for _, pipe in clients)
        connect_seconds = time.perf_counter() - connect_started
        print(f"{sent} waiters sent in {connect_seconds:.1f} s; settling {args.settle:.0f} s")
        time.sleep(args.settle)
        cpu_before = loadkit.process_cpu(server.pid)
        time.sleep(args.idle_window)
        parked_cpu = (loadkit.process_cpu(server.pid) - cpu_before) / args.idle_window
        parked = process_status(server.pid)
        print(f"parked: {parked}, server CPU {parked_cpu * 100:.0f}% while waiting")

        single_stamps = {}
        for request_id in singles:
            decider_pipe.send(("decide", [request_id]))
            _, committed, _, _ = decider_pipe.recv()
            single_stamps[request_id] = committed
            time.sleep(args.single_gap)
        time.sleep(1.0)

        print(f"deciding {len(bulk)} requests in one transaction …")
        decider_pipe.send(("decide-at-once", bulk))
        assert decider_pipe.recv() == ("ready to commit",)
        if args.py_spy:
            profile = ROOT / "var" / f"longpoll_waiters-{os.getpid()}.collapsed"
            spy = subprocess.Popen(
                [args.py_spy, "record", "--pid", str(server.pid), "--format", "raw", "--output", str(profile)]
                + ["--rate", "250", "--nonblocking", "--gil"],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            time.sleep(1.0)  # py-spy attaches
        load_at_commit = os.getloadavg()[0]
        wake_cpu_before = loadkit.process_cpu(server.pid)
        decider_pipe.send(("commit",))
        _, bulk_committed, bulk_published, decide_seconds = decider_pipe.recv()
        results = []
        for _, pipe in clients:
            if not pipe.poll(args.wake_timeout):
                raise RuntimeError("a client process did not finish")
            kind, payload = pipe.recv()
            results.extend(payload)
        wake_cpu = loadkit.process_cpu(server.pid) - wake_cpu_before
        sampler.stopped.set()
        if spy is not None:
            spy.send_signal(signal.SIGINT)
            spy.wait(timeout=30)
            print(f"py-spy profile of the server (collapsed stacks): {profile}")
    finally:
        with suppress(Exception):
            decider_pipe.send(("stop", None))
        for process, _ in clients:
            process.terminate()
        server.stop()

    by_id = {r[0]: r for r in results}
    failures = [r for r in results if r[1] != 200 or r[2] != "approved"]
    missing = len(request_ids) - len(by_id)
    single_ms = [(by_id[r][3] - single_stamps[r]) * 1000 for r in singles if r in by_id]
    bulk_wakes = [by_id[r][3] - bulk_committed for r in bulk if r in by_id]
    re_sent = sum(r[4] for r in results)
    wake_all = max(bulk_wakes) if bulk_wakes else float("nan")
    per_waiter_kib = (parked["rss_mib"] - baseline["rss_mib"]) * 1024 / max(1, sent)

    print()
    print(f"## Long-poll waiters — {datetime.date.today().isoformat()}")
    print()
    print(
        f"Machine: {os.cpu_count()} cores, Python {platform.python_version()}, waiters {len(request_ids)}, "
        f"client processes {args.client_processes}, load average at the bulk commit {load_at_commit:.1f}"
    )
    print()
    print("| Measure | Value | Target |")
    print("|---|---:|---|")
    print(f"| concurrent waiters held by 1 server process | {sent:,} | 10,000 |")
    print(f"| waiters sent (connect + request) in | {connect_seconds:.1f} s | |")
    print(f"| server RSS before / with waiters | {baseline['rss_mib']:.0f} / {parked['rss_mib']:.0f} MiB | |")
    print(f"| memory per waiter | {per_waiter_kib:.1f} KiB | reported |")
    print(
        f"| server threads before / with waiters / peak | {baseline['threads']} / {parked['threads']} / "
        f"{sampler.max_threads} | |"
    )
    print(f"| server CPU while waiters are parked (re-checks) | {parked_cpu * 100:.0f}% of a core | |")
    print(
        f"| single decision → waiter woken, p50 / p90 / max ({len(single_ms)} decisions) | "
        f"{statistics.median(single_ms):.1f} / {percentile(single_ms, 0.9):.1f} / {max(single_ms):.1f} ms | "
        f"p50 ≤ {SINGLE_P50_TARGET_MS:.0f} ms |"
    )
    print(
        f"| {len(bulk):,} decisions committed at once → every waiter woken | {wake_all:.2f} s | "
        f"≤ {WAKE_ALL_TARGET_S:.0f} s |"
    )
    print(
        f"| … 10% / 50% / 90% of them woken | {percentile(bulk_wakes, 0.1):.2f} / "
        f"{statistics.median(bulk_wakes):.2f} / {percentile(bulk_wakes, 0.9):.2f} s | |"
    )
    print(f"| … decider's notifications all sent to Redis after | {bulk_published - bulk_committed:.2f} s | |")
    print(f"| … server CPU to wake them all | {wake_cpu:.2f} s ({wake_cpu / len(bulk) * 1e6:.0f} µs per waiter) | |")
    print(
        f"| deciding them through the core's `decide_many`, batches of 500 (before the commit) | "
        f"{decide_seconds:.1f} s ({len(bulk) / decide_seconds:,.0f} decisions/s) | |"
    )
    print(f"| waits re-sent after a 408 | {re_sent} | |")
    print(f"| errors (not 200 approved, or missing) | {len(failures) + missing} | 0 |")
    print()
    if failures[:5]:
        print("first failures:", failures[:5])

    met = wake_all <= WAKE_ALL_TARGET_S and statistics.median(single_ms) <= SINGLE_P50_TARGET_MS
    if failures or missing:
        return 1
    return 0 if met or not args.strict else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--waiters", type=int, default=10_000)
    parser.add_argument("--client-processes", type=int, default=4)
    parser.add_argument("--setup-processes", type=int, default=2, help="processes submitting the requests")
    parser.add_argument("--singles", type=int, default=200, help="requests decided one at a time")
    parser.add_argument("--single-gap", type=float, default=0.05, help="seconds between single decisions")
    parser.add_argument("--settle", type=float, default=5.0, help="seconds to wait once every waiter is sent")
    parser.add_argument(
        "--idle-window", type=float, default=10.0, help="seconds over which the parked server's CPU is measured"
    )
    parser.add_argument("--wake-timeout", type=float, default=120.0)
    parser.add_argument("--py-spy", help="path of a py-spy binary: profile the server from the bulk decision on")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    parser.add_argument("--time-limit", type=float, default=1800.0)
    args = parser.parse_args()
    if args.singles >= args.waiters:
        raise SystemExit("--singles must be smaller than --waiters")

    loadkit.arm_time_limit(args.time_limit, stop_on_term=False)
    try:
        return run(args)
    finally:
        signal.alarm(0)


if __name__ == "__main__":
    sys.exit(main())
