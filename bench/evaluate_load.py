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
import datetime
import io
import json
import multiprocessing
import os
import platform
import pstats
import signal
import socket
import subprocess
import sys
import time
import uuid
from contextlib import contextmanager, suppress
from pathlib import Path
from urllib.parse import urlparse

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

THROUGHPUT_TARGET = 1000.0  # evaluations per second
P99_TARGET_MS = 50.0
ROUND_TRIP_TARGET = 6
LOOPBACK_HOSTS = {"", "127.0.0.1", "localhost", "::1", "[::1]"}
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/5"
DEMO_BUNDLE = ROOT / "controlplane" / "demo" / "bundle.yaml"
MANAGE = ROOT / "manage.py"


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


# --- environment, database and server ---------------------------------------------------


def check_loopback(url: str, what: str) -> None:
    if (urlparse(url).hostname or "") not in LOOPBACK_HOSTS:
        raise SystemExit(f"{what} must point at loopback for a benchmark (got {url!r})")


def server_env() -> dict[str, str]:
    env = os.environ.copy()
    env.setdefault("SECRET_KEY", "bench")
    env.setdefault("REDIS_URL", DEFAULT_REDIS_URL)
    env["DEBUG"] = "false"
    env["LOG_LEVEL"] = "WARNING"
    env["DJANGO_SETTINGS_MODULE"] = "governance.settings"
    return env


def recreate_database(url: str) -> None:
    import psycopg
    from psycopg import sql

    parsed = urlparse(url)
    name = parsed.path.lstrip("/")
    maintenance = parsed._replace(path="/postgres").geturl()
    with psycopg.connect(maintenance, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    print(f"recreated database {name!r}")


def manage(*args: str) -> str:
    result = subprocess.run(
        [sys.executable, str(MANAGE), *args], env=server_env(), cwd=ROOT, capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise SystemExit(f"manage.py {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    return result.stdout


def prepare_database() -> str:
    """Migrate, create the demo organization with the approved demo bundle; return a token."""
    start = time.perf_counter()
    manage("migrate", "-v0")
    manage("bootstrap_demo")
    manage(
        "apply_bundle",
        str(DEMO_BUNDLE),
        "--organization",
        "demo",
        "--actor",
        "system:demo",
        "--approve-as",
        "admin",
    )
    token = manage("create_api_token", "admin", "--name", "bench", "--role", "operator").strip().splitlines()[-1]
    print(f"database ready (migrate + demo bundle + token) in {time.perf_counter() - start:.1f} s")
    return token


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """``uvicorn governance.asgi:application`` in its own process group."""

    def __init__(self, workers: int):
        self.workers = workers
        self.port = free_port()
        self.process: subprocess.Popen | None = None
        self.log = open(ROOT / "var" / f"evaluate_load-{os.getpid()}.log", "w+b")  # noqa: SIM115

    def start(self, timeout: float = 60.0) -> None:
        command = [
            sys.executable,
            "-m",
            "uvicorn",
            "governance.asgi:application",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--workers",
            str(self.workers),
            "--no-access-log",
            "--lifespan",
            "off",
            "--log-level",
            "warning",
        ]
        self.process = subprocess.Popen(
            command, env=server_env(), cwd=ROOT, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True
        )
        import httpx

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the server exited with {self.process.returncode}:\n{self.output()}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=1.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"the server was not ready within {timeout:.0f} s:\n{self.output()}")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def pids(self) -> list[int]:
        """The uvicorn process and its worker processes."""
        if self.process is None:
            return []
        return [self.process.pid, *children_of(self.process.pid)]

    def output(self) -> str:
        self.log.flush()
        self.log.seek(0)
        return self.log.read().decode(errors="replace")[-4000:]

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            with suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=5)
        self.process = None


# --- CPU accounting (Linux /proc) -------------------------------------------------------

CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _stat_fields(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2 :].split()  # fields from "state" on (field 3)


def process_cpu(pid: int) -> float:
    """User + system CPU seconds of one process (0 when it is gone)."""
    fields = _stat_fields(pid)
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS if fields else 0.0


def children_of(parent: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = _stat_fields(int(entry.name))
            if fields and int(fields[1]) == parent:
                found.append(int(entry.name))
    return found


def machine_busy() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    total = sum(values[:8])
    return (total - idle) / CLOCK_TICKS, total / CLOCK_TICKS


def database_commits(database_url: str) -> int:
    """Transactions committed in the benchmark's database so far (PostgreSQL's statistics,
    flushed by each backend at most once a second: good over a window of seconds)."""
    import psycopg

    name = urlparse(database_url).path.lstrip("/")
    with psycopg.connect(database_url, autocommit=True) as conn:
        return conn.execute("SELECT xact_commit FROM pg_stat_database WHERE datname = %s", [name]).fetchone()[0]


def postgres_backends(database_url: str) -> list[int]:
    import psycopg

    name = urlparse(database_url).path.lstrip("/")
    with psycopg.connect(database_url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()", [name]
        ).fetchall()
    return [row[0] for row in rows]


class CpuMeter:
    """CPU seconds used by the server processes, PostgreSQL backends and the machine."""

    def __init__(self, server: Server, database_url: str):
        self.server, self.database_url = server, database_url

    def snapshot(self) -> dict:
        server_pids = self.server.pids()
        backends = postgres_backends(self.database_url)
        busy, total = machine_busy()
        return {
            "server": {pid: process_cpu(pid) for pid in server_pids},
            "postgres": {pid: process_cpu(pid) for pid in backends},
            "busy": busy,
            "total": total,
            "commits": database_commits(self.database_url),
            "at": time.monotonic(),
        }

    @staticmethod
    def used(before: dict, after: dict, key: str) -> float:
        # a backend that appeared mid-run counts from zero (it started during the run)
        return sum(cpu - before[key].get(pid, 0.0) for pid, cpu in after[key].items())


# --- the load clients (run in their own processes) --------------------------------------


async def _raw_client(host, port, path, token, prefix, suffix, tag, connect_at, window, latencies, errors):
    """A minimal keep-alive HTTP/1.1 client: far cheaper in CPU than httpx."""
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nAuthorization: Bearer {token}\r\n"
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
        body = prefix + f"{tag}-{sequence}".encode() + suffix
        start = time.perf_counter()
        try:
            writer.write(head + str(len(body)).encode() + b"\r\n\r\n" + body)
            status_line = await reader.readline()
            status = int(status_line.split()[1])
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
            content = await reader.readexactly(length)
            latencies.append(time.perf_counter() - start)
            if status != 200 or json.loads(content).get("outcome") != "accept":
                errors.append(f"{status} {content[:200]!r}")
            if close:
                writer.close()
                writer = None
        except (OSError, ValueError, IndexError, asyncio.IncompleteReadError) as exc:
            latencies.append(time.perf_counter() - start)
            errors.append(f"{type(exc).__name__}: {exc}")
            if writer is not None:
                writer.close()
            writer = None
    if writer is not None:
        writer.close()


async def _httpx_client(url, path, token, prefix, suffix, tag, connect_at, window, latencies, errors):
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
                response = await client.post(path, content=body)
                latencies.append(time.perf_counter() - start)
                if response.status_code != 200 or response.json().get("outcome") != "accept":
                    errors.append(f"{response.status_code} {response.text[:200]}")
            except httpx.HTTPError as exc:
                latencies.append(time.perf_counter() - start)
                errors.append(f"{type(exc).__name__}: {exc}")


async def _drive(kind, url, token, first_index, clients, seconds, run_tag, connect_base, stagger, start_at):
    """Connect the clients (``stagger`` seconds apart, globally), then load from ``start_at``."""
    prefix, suffix = body_template()
    parsed = urlparse(url)
    window = {"go": asyncio.Event(), "deadline": 0.0}
    latencies: list[float] = []
    errors: list[str] = []
    tasks = []
    for index in range(clients):
        tag = f"{run_tag}-{index}"
        connect_at = connect_base + (first_index + index) * stagger
        if kind == "raw":
            coroutine = _raw_client(
                parsed.hostname,
                parsed.port,
                "/v1/evaluate",
                token,
                prefix,
                suffix,
                tag,
                connect_at,
                window,
                latencies,
                errors,
            )
        else:
            coroutine = _httpx_client(
                url, "/v1/evaluate", token, prefix, suffix, tag, connect_at, window, latencies, errors
            )
        tasks.append(asyncio.create_task(coroutine))
    await asyncio.sleep(max(0.0, start_at - time.time()))
    began = time.perf_counter()
    window["deadline"] = began + seconds
    window["go"].set()
    outcomes = await asyncio.gather(*tasks, return_exceptions=True)
    errors.extend(f"client crashed: {o!r}" for o in outcomes if isinstance(o, BaseException))
    return latencies, errors, began, time.perf_counter()


def client_process(kind, url, token, first_index, clients, seconds, run_tag, connect_base, stagger, start_at, queue):
    """One load-generating process: ``clients`` coroutines, one connection each."""
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    cpu_start = time.process_time()
    latencies, errors, began, ended = asyncio.run(
        _drive(kind, url, token, first_index, clients, seconds, run_tag, connect_base, stagger, start_at)
    )
    queue.put(
        {
            "latencies": latencies,
            "errors": len(errors),
            "error_samples": errors[:5],
            "wall": ended - began,
            "cpu": time.process_time() - cpu_start,
        }
    )


def run_load(kind, url, token, concurrency, seconds, processes, run_tag, meter=None, stagger=0.0) -> dict:
    """Drive ``concurrency`` clients split over ``processes`` processes; merge their results.

    Clients open their connections ``stagger`` seconds apart before the measured window (so a
    burst of connects does not land on one server worker); with a ``meter``, CPU use is
    sampled when the window opens and when the clients finish.
    """
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    shares = [concurrency // processes + (1 if i < concurrency % processes else 0) for i in range(processes)]
    connect_base = time.time() + 1.5  # spawned interpreters need a moment to import
    start_at = connect_base + concurrency * stagger + 0.3
    workers = []
    first_index = 0
    for i, share in enumerate(shares):
        if share:
            args = (kind, url, token, first_index, share, seconds, f"{run_tag}-p{i}", connect_base, stagger, start_at)
            workers.append(context.Process(target=client_process, args=(*args, queue), daemon=True))
        first_index += share
    for worker in workers:
        worker.start()
    try:
        time.sleep(max(0.0, start_at - time.time()))
        before = meter.snapshot() if meter else None
        results = [queue.get(timeout=seconds + concurrency * stagger + 120) for _ in workers]
        after = meter.snapshot() if meter else None
    finally:
        for worker in workers:
            worker.join(timeout=5)
            if worker.is_alive():
                worker.terminate()
    latencies = sorted(latency for result in results for latency in result["latencies"])
    wall = max(result["wall"] for result in results)
    cpu = {}
    if meter:
        window = after["at"] - before["at"]
        cpu = {
            "server_cpu": CpuMeter.used(before, after, "server") / window,
            "per_process": sorted(
                (cpu - before["server"].get(pid, 0.0)) / window for pid, cpu in after["server"].items()
            ),
            "postgres_cpu": CpuMeter.used(before, after, "postgres") / window,
            "machine_cpu": (after["busy"] - before["busy"]) / window,
            "client_cpu": sum(result["cpu"] for result in results) / wall if wall else 0.0,
            "commits": after["commits"] - before["commits"],
        }
    return {
        **cpu,
        "requests": len(latencies),
        "errors": sum(result["errors"] for result in results),
        "error_samples": [sample for result in results for sample in result["error_samples"]][:5],
        "wall": wall,
        "rps": len(latencies) / wall if wall else 0.0,
        **percentiles(latencies),
    }


def percentiles(latencies: list[float]) -> dict:
    if not latencies:
        return {"p50": 0.0, "p90": 0.0, "p99": 0.0, "max": 0.0}

    def at(q: float) -> float:
        return latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000

    return {"p50": at(0.50), "p90": at(0.90), "p99": at(0.99), "max": latencies[-1] * 1000}


# --- one configuration -------------------------------------------------------------------


def start_py_spy(py_spy: str, pids: list[int], seconds: float) -> list[tuple[subprocess.Popen, Path]]:
    """Sample each server worker with py-spy for ``seconds`` (collapsed stacks, one file per worker).
    Only the thread holding the GIL is sampled (``--gil``): threads parked on a lock or a
    queue would otherwise fill the report."""
    recorders = []
    for pid in pids:
        output = ROOT / "var" / f"evaluate_load-pyspy-{pid}.txt"
        command = [py_spy, "record", "--pid", str(pid), "--duration", str(max(1, int(seconds))), "--rate", "250"]
        command += ["--gil", "--format", "raw", "--output", str(output), "--nonblocking"]
        recorders.append((subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL), output))
    return recorders


def report_py_spy(recorders: list[tuple[subprocess.Popen, Path]], top: int = 30) -> None:
    """Merge the workers' samples; print the hottest functions by self and by inclusive samples."""
    own: dict[str, int] = {}
    inclusive: dict[str, int] = {}
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
            frames = [_function_of(frame) for frame in stack.split(";")]
            own[frames[-1]] = own.get(frames[-1], 0) + samples
            for frame in set(frames):
                inclusive[frame] = inclusive.get(frame, 0) + samples
        output.unlink()
    if not total:
        return
    print(f"\npy-spy (GIL holder only): {total:,} samples of busy server threads (all workers, one measured run)")
    for title, table in (("self", own), ("inclusive", inclusive)):
        print(f"\nTop {top} functions by {title} samples:")
        for frame, samples in sorted(table.items(), key=lambda item: -item[1])[:top]:
            print(f"  {samples / total * 100:5.1f}%  {frame}")


def _function_of(frame: str) -> str:
    """``dispatch (rest_framework/views.py:490)`` -> ``dispatch (rest_framework/views.py)``."""
    name, _, location = frame.partition(" (")
    path = location.rstrip(")").rsplit(":", 1)[0]
    for marker in ("site-packages/", "/work/main/", "python3.11/"):
        if marker in path:
            path = path.split(marker, 1)[1]
    return f"{name} ({path})"


def measure_configuration(args, token: str, workers: int) -> list[dict]:
    database_url = os.environ["DATABASE_URL"]
    server = Server(workers)
    rows = []
    try:
        server.start()
        meter = CpuMeter(server, database_url)
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
                recorders = start_py_spy(args.py_spy, worker_pids, args.duration)
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
            print_run(result, args)
            if recorders:
                report_py_spy(recorders)
    finally:
        server.stop()
        server.log.close()
        Path(server.log.name).unlink(missing_ok=True)
    return rows


def print_run(r: dict, args) -> None:
    print(
        f"  workers={r['workers']} run {r['run']}: {r['rps']:,.0f} req/s over {r['wall']:.1f} s "
        f"({r['requests']:,} requests, {r['errors']} errors), p50 {r['p50']:.1f} ms, p90 {r['p90']:.1f} ms, "
        f"p99 {r['p99']:.1f} ms, max {r['max']:.1f} ms; load avg at start {r['load']:.2f}"
    )
    print(
        f"    CPU (cores busy): client {r['client_cpu']:.2f}, server {r['server_cpu']:.2f}, "
        f"postgres {r['postgres_cpu']:.2f}, machine {r['machine_cpu']:.2f} of {os.cpu_count()}; "
        f"per server process {' '.join(f'{c:.2f}' for c in r.get('per_process', ()))}"
    )
    for sample in r["error_samples"]:
        print(f"    error: {sample}")


def print_table(rows: list[dict], args) -> None:
    print()
    print(
        f"POST /v1/evaluate, accept path, {args.concurrency} concurrent clients "
        f"({args.client} client in {args.client_processes} process(es)), {args.duration:.0f} s per run"
    )
    print()
    print(
        "| Workers | Run | Load avg | Requests/s | p50 ms | p90 ms | p99 ms | max ms | Errors "
        "| CPU client | CPU server | CPU postgres | CPU machine | Evaluations per commit |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['workers']} | {r['run']} | {r['load']:.2f} | {r['rps']:,.0f} | {r['p50']:.1f} | {r['p90']:.1f} "
            f"| {r['p99']:.1f} | {r['max']:.1f} | {r['errors']} | {r['client_cpu']:.2f} | {r['server_cpu']:.2f} "
            f"| {r['postgres_cpu']:.2f} | {r['machine_cpu']:.2f} "
            f"| {r['requests'] / r['commits'] if r.get('commits') else 0:.1f} |"
        )


def meets_targets(row: dict) -> bool:
    return row["rps"] >= THROUGHPUT_TARGET and row["p99"] <= P99_TARGET_MS and row["errors"] == 0


# --- in-process: round trips per evaluation, profile -------------------------------------


def setup_django() -> None:
    for key, value in server_env().items():
        os.environ.setdefault(key, value)
    os.environ["DEBUG"] = "false"
    import django

    django.setup()


@contextmanager
def captured():
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as context:
        yield context


def data_statements(statements: list[str]) -> list[str]:
    return [s for s in statements if not s.upper().startswith(("SAVEPOINT", "RELEASE", "BEGIN", "COMMIT"))]


def print_statements(title: str, statements: list[str]) -> None:
    data = data_statements(statements)
    print(f"\n{title}: {len(statements)} statements, {len(data)} besides transaction control")
    for number, sql in enumerate(statements, 1):
        flat = " ".join(sql.split())
        print(f"  {number:2}. {flat[:220]}{' …' if len(flat) > 220 else ''}")


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
    with captured() as service:
        assert service_call(1)["outcome"] == "accept"
    service_statements = [q["sql"] for q in service.captured_queries]
    print_statements("Service evaluate() (warm snapshot)", service_statements)

    client = Client(HTTP_AUTHORIZATION=f"Bearer {token}")

    def http_call(n: int):
        response = client.post("/v1/evaluate", json.dumps(payment(f"rt-{tag}-http-{n}")), "application/json")
        assert response.status_code == 200 and response.json()["outcome"] == "accept", response.content

    http_call(0)
    with captured() as http:
        http_call(1)
    http_statements = [q["sql"] for q in http.captured_queries]
    print_statements("Whole HTTP request through Django (token auth, organization, evaluate)", http_statements)

    import envelopes.evaluation.fastroute as fastroute

    assert fastroute.answer(token, json.dumps(payment(f"rt-{tag}-fast-0")).encode()) is not None  # caches the token
    with captured() as fast:
        assert fastroute.answer(token, json.dumps(payment(f"rt-{tag}-fast-1")).encode()) is not None
    fast_statements = [q["sql"] for q in fast.captured_queries]
    print_statements("Fast route (what the ASGI server runs for a plain request)", fast_statements)
    return {
        "fast": len(fast_statements),
        "service": len(data_statements(service_statements)),
        "service_all": len(service_statements),
        "http": len(data_statements(http_statements)),
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
    for order in ("tottime", "cumulative"):
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).strip_dirs().sort_stats(order).print_stats(top)
        print(f"\nTop {top} by {order}:\n```")
        print(out.getvalue().strip())
        print("```")


class StageTimer:
    """Wraps named functions (in this process only) and adds up their wall and CPU time."""

    def __init__(self):
        self.totals: dict[str, list[float]] = {}
        self.restore: list[tuple[object, str, object]] = []

    def wrap(self, owner, attribute: str, label: str) -> None:
        original = getattr(owner, attribute, None)
        if original is None:
            print(f"  (stage {label!r} skipped: {attribute} not found)")
            return
        totals = self.totals.setdefault(label, [0.0, 0.0, 0])

        def timed(*args, **kwargs):
            wall, cpu = time.perf_counter(), time.thread_time()
            try:
                return original(*args, **kwargs)
            finally:
                totals[0] += time.perf_counter() - wall
                totals[1] += time.thread_time() - cpu
                totals[2] += 1

        self.restore.append((owner, attribute, original))
        setattr(owner, attribute, timed)

    def unwrap(self) -> None:
        for owner, attribute, original in reversed(self.restore):
            setattr(owner, attribute, original)


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
    timer = StageTimer()
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


def machine_line() -> str:
    cpu = "unknown"
    with suppress(OSError, StopIteration):
        cpu = next(
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        )
    return (
        f"{datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M UTC}; {os.cpu_count()} cores ({cpu}); "
        f"Python {platform.python_version()}; load average at start {' '.join(f'{v:.2f}' for v in os.getloadavg())}"
    )


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=2, help="uvicorn worker processes (default 2)")
    parser.add_argument("--sweep", help="comma list of worker counts to try, e.g. 1,2,3,4 (overrides --workers)")
    parser.add_argument("--concurrency", type=int, default=32, help="concurrent clients (default 32)")
    parser.add_argument("--duration", type=float, default=20.0, help="measured seconds per run (default 20)")
    parser.add_argument("--warmup", type=float, default=3.0, help="warm-up seconds before each run (default 3)")
    parser.add_argument("--repeat", type=int, default=1, help="measured runs per configuration (default 1)")
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
    parser.add_argument("--no-load", action="store_true", help="skip the HTTP load (round trips / profile only)")
    parser.add_argument("--fresh", action="store_true", help="drop and recreate the database first")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    parser.add_argument("--time-limit", type=float, default=1800.0, help="abort after this many seconds")
    return parser.parse_args(argv)


class TimeLimitExceeded(Exception):
    pass


def main(argv=None) -> int:
    args = parse_args(argv)
    database_url = os.environ.get("DATABASE_URL", "")
    if not database_url.startswith(("postgres://", "postgresql://")):
        raise SystemExit("set DATABASE_URL to a scratch PostgreSQL database on loopback")
    check_loopback(database_url, "DATABASE_URL")
    check_loopback(server_env()["REDIS_URL"], "REDIS_URL")
    if args.concurrency < 1 or args.client_processes < 1 or args.duration <= 0:
        raise SystemExit("--concurrency, --client-processes and --duration must be positive")

    def on_alarm(signum, frame):
        raise TimeLimitExceeded(f"time limit of {args.time_limit:.0f} s exceeded")

    def on_term(signum, frame):
        raise KeyboardInterrupt("SIGTERM")

    signal.signal(signal.SIGALRM, on_alarm)
    signal.signal(signal.SIGTERM, on_term)  # stop the server on kill as on Ctrl-C
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:  # started in the background by a shell
        signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.alarm(max(1, int(args.time_limit)))
    (ROOT / "var").mkdir(exist_ok=True)
    print(f"Machine: {machine_line()}")
    if args.fresh:
        recreate_database(database_url)
    token = prepare_database()
    rows: list[dict] = []
    ok = True
    try:
        if not args.no_load:
            counts = [int(w) for w in args.sweep.split(",")] if args.sweep else [args.workers]
            for workers in counts:
                print(f"\nworkers={workers}, concurrency={args.concurrency}:")
                rows.extend(measure_configuration(args, token, workers))
            print_table(rows, args)
            ok = all(r["errors"] == 0 for r in rows)
            best = max(rows, key=lambda r: (r["errors"] == 0 and r["p99"] <= P99_TARGET_MS, r["rps"]))
            verdict = "met" if meets_targets(best) else "not met"
            print(
                f"\nBest: {best['workers']} worker(s): {best['rps']:,.0f} req/s, p99 {best['p99']:.1f} ms "
                f"(target ≥ {THROUGHPUT_TARGET:,.0f} req/s with p99 ≤ {P99_TARGET_MS:.0f} ms: {verdict})"
            )
            if args.strict and not meets_targets(best):
                ok = False
        setup_django()
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
