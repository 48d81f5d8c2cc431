"""What the benchmark scripts share (not a benchmark itself).

The scripts in ``bench/`` import it as ``import loadkit`` (Python puts the running script's
folder, ``bench/``, first on ``sys.path``; the spawned load processes inherit that path).
Importing it puts the repository root on ``sys.path`` too, so the scripts can import the
project. Nothing here imports Django at import time.

- environment and database: the loopback checks, the environment of the server and of the
  in-process measurements, ``setup_django``, ``recreate_database`` (``--fresh``);
- ``Server``: ``uvicorn governance.asgi:application`` on 127.0.0.1 and a free port, in its
  own process group, ready once ``/readyz`` answers;
- ``start_target``: a keep-alive HTTP/1.1 target answering a fixed small JSON body;
- CPU accounting from Linux ``/proc`` (``CpuMeter``: the server's processes, the database's
  PostgreSQL backends, the machine, the database's commits, other named processes);
- the load driver: keep-alive HTTP/1.1 clients in spawned processes, a closed loop over a
  measured window (``run_load``), the row of a run (requests/s, percentiles, CPU);
- in-process helpers: the statements of a call, ``StageTimer``, py-spy sampling;
- reporting and the pieces of ``main``: the machine line, a run's lines, the markdown table,
  the common options, the time limit.
"""

import abc
import asyncio
import datetime
import io
import multiprocessing
import os
import platform
import pstats
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from contextlib import contextmanager, suppress
from pathlib import Path
from urllib.parse import urlparse

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

LOOPBACK_HOSTS = {"", "127.0.0.1", "localhost", "::1", "[::1]"}
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/5"


# --- environment and database ----------------------------------------------------------------


def check_loopback(url: str, what: str) -> None:
    if (urlparse(url).hostname or "") not in LOOPBACK_HOSTS:
        raise SystemExit(f"{what} must point at loopback for a benchmark (got {url!r})")


def scratch_database_url() -> str:
    """``DATABASE_URL``, which must name a PostgreSQL database on loopback."""
    database_url = os.environ.get("DATABASE_URL", "")
    if not database_url.startswith(("postgres://", "postgresql://")):
        raise SystemExit("set DATABASE_URL to a scratch PostgreSQL database on loopback")
    check_loopback(database_url, "DATABASE_URL")
    return database_url


def in_process_env() -> None:
    """Defaults for the scripts that measure in their own process only (no server)."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "governance.settings")
    os.environ.setdefault("SECRET_KEY", "bench")
    os.environ.setdefault("LOG_LEVEL", "WARNING")


def server_env() -> dict[str, str]:
    """The server's environment: this one with DEBUG off, LOG_LEVEL=WARNING and a local Redis."""
    env = os.environ.copy()
    env.setdefault("SECRET_KEY", "bench")
    env.setdefault("REDIS_URL", DEFAULT_REDIS_URL)
    env["DEBUG"] = "false"
    env["LOG_LEVEL"] = "WARNING"
    env["DJANGO_SETTINGS_MODULE"] = "governance.settings"
    return env


def setup_django(env: dict[str, str] | None = None) -> None:
    """Django in this process, with the server's environment (``env``) where none is set."""
    for key, value in (env or server_env()).items():
        os.environ.setdefault(key, value)
    os.environ["DEBUG"] = "false"
    import django

    django.setup()


def manage(*args: str) -> str:
    """``manage.py`` in a subprocess with the server's environment; its output."""
    result = subprocess.run(
        [sys.executable, str(ROOT / "manage.py"), *args],
        env=server_env(),
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise SystemExit(f"manage.py {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    return result.stdout


def close_connection() -> None:
    from django.db import connection

    connection.close()


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


# --- the server ----------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """``uvicorn governance.asgi:application`` in its own process group, run from ``root``
    (another checkout of the code can be measured on the same database); its output goes to
    ``var/<name>-<pid>.log``. Subclasses change ``environment()``."""

    def __init__(self, workers: int, name: str, root: Path = ROOT, options: tuple[str, ...] = ()):
        self.workers, self.root, self.options = workers, root, options
        self.port = free_port()
        self.process: subprocess.Popen | None = None
        (ROOT / "var").mkdir(exist_ok=True)
        self.log = open(ROOT / "var" / f"{name}-{os.getpid()}.log", "w+b")  # noqa: SIM115

    def environment(self) -> dict[str, str]:
        return server_env()

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
            *self.options,
            "--no-access-log",
            "--lifespan",
            "off",
            "--log-level",
            "warning",
        ]
        self.process = subprocess.Popen(
            command,
            env=self.environment(),
            cwd=self.root,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
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

    @property
    def pid(self) -> int:
        """The uvicorn process (with one worker, the one serving)."""
        return self.process.pid

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

    def close(self) -> None:
        """Stop the server and delete its log."""
        self.stop()
        self.log.close()
        Path(self.log.name).unlink(missing_ok=True)


# --- a local HTTP target (its own process) ----------------------------------------------------------

TARGET_BODY = b'{"ok":true,"items":[1,2,3]}'
TARGET_RESPONSE = (
    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
    + str(len(TARGET_BODY)).encode()
    + b"\r\n\r\n"
    + TARGET_BODY
)


def target_main(port_pipe, use_uvloop: bool) -> None:
    """A keep-alive HTTP/1.1 server answering every request with a small JSON body."""
    if use_uvloop:
        install_uvloop()

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


def start_target(use_uvloop: bool = True, method: str = "spawn") -> tuple[multiprocessing.Process, int]:
    """The target in a daemon process (``method``: how multiprocessing starts it); its port."""
    context = multiprocessing.get_context(method)
    parent, child = context.Pipe()
    process = context.Process(target=target_main, args=(child, use_uvloop), daemon=True)
    process.start()
    if not parent.poll(30):
        raise RuntimeError("the target did not start")
    return process, parent.recv()


# --- CPU accounting (Linux /proc) ----------------------------------------------------------------

CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def stat_fields(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2 :].split()  # fields from "state" on (field 3)


def cpu_times(pid: int) -> tuple[float, float]:
    """(user + system, system) CPU seconds of one process ((0, 0) when it is gone)."""
    fields = stat_fields(pid)
    if not fields:
        return 0.0, 0.0
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS, int(fields[12]) / CLOCK_TICKS


def process_cpu(pid: int) -> float:
    """User + system CPU seconds of one process (0 when it is gone)."""
    return cpu_times(pid)[0]


def children_of(parent: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = stat_fields(int(entry.name))
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
    """CPU seconds used by the server processes (and in the kernel), the PostgreSQL backends,
    the machine and ``others`` (name → pid, e.g. a target), and the database's commits."""

    def __init__(self, server: Server, database_url: str, others: dict[str, int] | None = None):
        self.server, self.database_url, self.others = server, database_url, others or {}

    def snapshot(self) -> dict:
        server = {pid: cpu_times(pid) for pid in self.server.pids()}
        backends = postgres_backends(self.database_url)
        busy, total = machine_busy()
        return {
            "server": {pid: times[0] for pid, times in server.items()},
            "system": {pid: times[1] for pid, times in server.items()},
            "postgres": {pid: process_cpu(pid) for pid in backends},
            "others": {name: process_cpu(pid) for name, pid in self.others.items()},
            "busy": busy,
            "total": total,
            "commits": database_commits(self.database_url),
            "at": time.monotonic(),
        }

    @staticmethod
    def used(before: dict, after: dict, key: str) -> float:
        # a backend that appeared mid-run counts from zero (it started during the run)
        return sum(cpu - before[key].get(pid, 0.0) for pid, cpu in after[key].items())

    def window(self, before: dict, after: dict, calls: int) -> dict:
        """Cores busy over the window between two snapshots, CPU per call, calls per commit."""
        span = after["at"] - before["at"]
        server = self.used(before, after, "server")
        postgres = self.used(before, after, "postgres")
        commits = after["commits"] - before["commits"]
        row = {
            "server_cpu": server / span,
            "server_ms_per_call": server / calls * 1000 if calls else 0.0,
            "per_process": sorted(
                (cpu - before["server"].get(pid, 0.0)) / span for pid, cpu in after["server"].items()
            ),
            "server_system_share": self.used(before, after, "system") / server if server else 0.0,
            "postgres_cpu": postgres / span,
            "postgres_ms_per_call": postgres / calls * 1000 if calls else 0.0,
            "machine_cpu": (after["busy"] - before["busy"]) / span,
            "commits": commits,
            "per_commit": calls / commits if commits else 0.0,
        }
        for name in self.others:
            row[f"{name}_cpu"] = (after["others"][name] - before["others"][name]) / span
        return row


# --- the load driver ------------------------------------------------------------------------------
#
# ``run_load`` starts one spawned process per share of the clients; in each,
# ``make_clients(share)`` (a module-level function of the script, so it can be pickled) returns
# the clients, as functions ``client(window, latencies)`` returning a coroutine, and the
# ``Tally`` they report to. The clients connect first (each at its own time: a burst of
# connects lands on one uvicorn worker), then all call back to back from ``start_at`` for
# ``seconds`` (a closed loop).


def install_uvloop() -> None:
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass


def percentiles(latencies: list[float]) -> dict:
    """p50, p90, p95, p99 and max, in ms, of sorted latencies in seconds."""
    if not latencies:
        return {"p50": 0.0, "p90": 0.0, "p95": 0.0, "p99": 0.0, "max": 0.0}

    def at(q: float) -> float:
        return latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000

    return {"p50": at(0.50), "p90": at(0.90), "p95": at(0.95), "p99": at(0.99), "max": latencies[-1] * 1000}


class Tally:
    """The outcomes of one load process: a count per kind, "ok" or an error's kind."""

    def __init__(self):
        self.counts: Counter = Counter()

    def ok(self) -> None:
        self.counts["ok"] += 1

    def error(self, kind: str) -> None:
        self.counts[kind] += 1

    def failed(self, exc: BaseException) -> None:
        """A call that raised (connection lost, unreadable answer)."""
        self.error(type(exc).__name__)

    def crashed(self, exc: BaseException) -> None:
        """A client that stopped (e.g. could not connect)."""
        self.error(f"client crashed: {exc!r}"[:120])

    def result(self) -> dict:
        return {"outcomes": dict(self.counts)}

    @staticmethod
    def merge(results: list[dict]) -> dict:
        outcomes: Counter = Counter()
        for result in results:
            outcomes.update(result["outcomes"])
        return {
            "ok": outcomes.pop("ok", 0),
            "errors": sum(outcomes.values()),
            "error_kinds": dict(outcomes.most_common(6)),
        }


class Calls(abc.ABC):
    """One client's calls on a keep-alive connection: ``request`` makes call ``sequence``
    (inside the timed span) as the chunks written in turn, ``answered`` judges the answer and
    tells the tally."""

    def __init__(self, tally: Tally):
        self.tally = tally

    @abc.abstractmethod
    def request(self, sequence: int) -> tuple[bytes, ...]:
        """The chunks of call ``sequence``'s request."""

    @abc.abstractmethod
    def answered(self, sequence: int, status: int, content: bytes) -> None:
        """Count call ``sequence``'s answer in the tally."""


async def read_response(reader) -> tuple[int, bytes, bool]:
    """Status, body and whether the server closes the connection, of one HTTP/1.1 response
    with a Content-Length."""
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
    return status, await reader.readexactly(length), close


async def keep_alive_client(host: str, port: int, connect_at: float, calls: Calls, window: dict, latencies: list):
    """Connect at ``connect_at`` (wall clock), wait for the window, then call back to back
    until its deadline on one keep-alive HTTP/1.1 connection (a new one if it is closed).
    A call's latency runs from making its request to the last byte of its answer."""
    await asyncio.sleep(max(0.0, connect_at - time.time()))
    reader, writer = await asyncio.open_connection(host, port)
    await window["go"].wait()
    sequence = 0
    while time.perf_counter() < window["deadline"]:
        if writer is None:
            reader, writer = await asyncio.open_connection(host, port)
        sequence += 1
        start = time.perf_counter()
        timed = False
        try:
            for chunk in calls.request(sequence):
                writer.write(chunk)
            status, content, close = await read_response(reader)
            latencies.append(time.perf_counter() - start)
            timed = True
            calls.answered(sequence, status, content)
            if close:
                writer.close()
                writer = None
        except (OSError, ValueError, IndexError, asyncio.IncompleteReadError) as exc:
            if not timed:
                latencies.append(time.perf_counter() - start)
            calls.tally.failed(exc)
            if writer is not None:
                writer.close()
            writer = None
    if writer is not None:
        writer.close()


def schedule(clients: int, stagger: float, lead: float = 2.0) -> tuple[list[float], float]:
    """Connect times ``stagger`` s apart from ``lead`` s from now (spawned interpreters import
    first), and when the window opens."""
    base = time.time() + lead
    return [base + k * stagger for k in range(clients)], base + clients * stagger + 0.3


async def _closed_loop(clients, tally: Tally, seconds: float, start_at: float, latencies: list):
    window = {"go": asyncio.Event(), "deadline": 0.0}
    tasks = [asyncio.create_task(client(window, latencies)) for client in clients]
    await asyncio.sleep(max(0.0, start_at - time.time()))
    began = time.perf_counter()
    window["deadline"] = began + seconds
    window["go"].set()
    for outcome in await asyncio.gather(*tasks, return_exceptions=True):
        if isinstance(outcome, BaseException):
            tally.crashed(outcome)
    return began, time.perf_counter()


def load_process(make_clients, share, seconds: float, start_at: float, queue) -> None:
    """One spawned load process: its clients' latencies, outcomes, wall time and CPU."""
    install_uvloop()
    clients, tally = make_clients(share)
    cpu_start = time.process_time()
    latencies: list[float] = []
    began, ended = asyncio.run(_closed_loop(clients, tally, seconds, start_at, latencies))
    queue.put({**tally.result(), "latencies": latencies, "wall": ended - began, "cpu": time.process_time() - cpu_start})


def run_load(
    make_clients, shares: list, seconds: float, start_at: float, tally: type[Tally] = Tally, meter=None
) -> dict:
    """Each share of the clients in its own process; the merged row of the run (``tally``: the
    class the clients report to, which merges the processes' outcomes). With a ``meter``, CPU
    is sampled when the window opens and when every process has reported."""
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    workers = [
        context.Process(target=load_process, args=(make_clients, share, seconds, start_at, queue), daemon=True)
        for share in shares
    ]
    for worker in workers:
        worker.start()
    try:
        time.sleep(max(0.0, start_at - time.time()))
        before = meter.snapshot() if meter else None
        results = [queue.get(timeout=seconds + 120) for _ in workers]
        after = meter.snapshot() if meter else None
    finally:
        for worker in workers:
            worker.join(timeout=5)
            if worker.is_alive():
                worker.terminate()
    latencies = sorted(latency for result in results for latency in result["latencies"])
    wall = max(result["wall"] for result in results)
    row = {
        "requests": len(latencies),
        **tally.merge(results),
        "wall": wall,
        "rps": len(latencies) / wall if wall else 0.0,
        **percentiles(latencies),
    }
    if meter:
        row.update(meter.window(before, after, row["requests"]))
        row["client_cpu"] = sum(result["cpu"] for result in results) / wall if wall else 0.0
    return row


# --- in-process: statements, stages, py-spy -------------------------------------------------------


@contextmanager
def captured():
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as context:
        yield context


def data_statements(statements: list[str]) -> list[str]:
    return [s for s in statements if not s.upper().startswith(("SAVEPOINT", "RELEASE", "BEGIN", "COMMIT"))]


def print_profile(profiler, top: int) -> None:
    """The ``top`` functions of a cProfile run by own time, then by cumulative time."""
    for order in ("tottime", "cumulative"):
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).strip_dirs().sort_stats(order).print_stats(top)
        print(f"\nTop {top} by {order}:\n```")
        print(out.getvalue().strip())
        print("```")


def print_statements(title: str, statements: list[str]) -> None:
    data = data_statements(statements)
    print(f"\n{title}: {len(statements)} statements, {len(data)} besides transaction control")
    for number, sql in enumerate(statements, 1):
        flat = " ".join(sql.split())
        print(f"  {number:2}. {flat[:220]}{' …' if len(flat) > 220 else ''}")


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


def start_py_spy(py_spy: str, pids: list[int], seconds: float, name: str) -> list[tuple[subprocess.Popen, Path]]:
    """Sample each server worker with py-spy for ``seconds`` (collapsed stacks, one file per
    worker, ``var/<name>-pyspy-<pid>.txt``). Only the thread holding the GIL is sampled
    (``--gil``): threads parked on a lock or a queue would otherwise fill the report."""
    recorders = []
    for pid in pids:
        output = ROOT / "var" / f"{name}-pyspy-{pid}.txt"
        command = [py_spy, "record", "--pid", str(pid), "--duration", str(max(1, int(seconds))), "--rate", "250"]
        command += ["--gil", "--format", "raw", "--output", str(output), "--nonblocking"]
        recorders.append((subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL), output))
    return recorders


def read_py_spy(recorders: list[tuple[subprocess.Popen, Path]], keep: bool) -> tuple[Counter, Counter, int]:
    """Wait for the recorders; the samples per function, self and inclusive, and in total.
    The raw files are deleted, or kept and named when ``keep``."""
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
            frames = [function_of(frame) for frame in stack.split(";")]
            own[frames[-1]] += samples
            for frame in set(frames):
                inclusive[frame] += samples
        if keep:
            print(f"py-spy's raw stacks: {output}")
        else:
            output.unlink()
    return own, inclusive, total


def report_py_spy(
    recorders: list[tuple[subprocess.Popen, Path]], parts: list[tuple[str, str | None]], *, keep: bool = False
) -> None:
    """What ``read_py_spy`` found: the inclusive share of each of ``parts`` ((label, function
    name), the name None for what runs outside ``HotPath._route``, the pool threads and the
    group commit's writer: uvicorn's own work), then the hottest functions by self samples."""
    own, inclusive, total = read_py_spy(recorders, keep=keep)
    if not total:
        return

    def share(name: str) -> float:
        return sum(n for frame, n in inclusive.items() if frame == name or frame.startswith(name + " (")) / total

    print(f"\npy-spy (GIL holder only): {total:,} samples of busy server threads")
    print("\n| Part | Share of server samples |\n|---|---:|")
    for label, name in parts:
        outside = 1.0 - share("HotPath._route") - share("_worker") - share("GroupCommit._run")
        value = outside if name is None else share(name)
        print(f"| {label} | {value * 100:.1f}% |")
    print("\nTop 25 functions by self samples:")
    for frame, samples in own.most_common(25):
        print(f"  {samples / total * 100:5.1f}%  {frame}")


def function_of(frame: str) -> str:
    """``dispatch (rest_framework/views.py:490)`` -> ``dispatch (rest_framework/views.py)``."""
    name, _, location = frame.partition(" (")
    path = location.rstrip(")").rsplit(":", 1)[0]
    for marker in ("site-packages/", "/work/main/", "python3.11/"):
        if marker in path:
            path = path.split(marker, 1)[1]
    return f"{name} ({path})"


# --- reporting ------------------------------------------------------------------------------------


def load_average() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


def cpu_model() -> str:
    with suppress(OSError, StopIteration):
        return next(
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        )
    return "unknown"


def machine_line(database: str = "") -> str:
    """Date, cores, CPU, Python (and ``database``, e.g. "PostgreSQL 15.2"), load average."""
    return (
        f"{datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M UTC}; {os.cpu_count()} cores ({cpu_model()}); "
        f"Python {platform.python_version()}; {database + '; ' if database else ''}"
        f"load average at start {load_average()}"
    )


def print_run_line(r: dict, rate: str, calls: str, spread: str) -> None:
    """A measured run's first line: ``rate`` ("req/s"), ``calls`` ("requests"), the middle
    percentile ``spread`` ("p90" or "p95")."""
    print(
        f"  workers={r['workers']} run {r['run']}: {r['rps']:,.0f} {rate} over {r['wall']:.1f} s "
        f"({r['requests']:,} {calls}, {r['errors']} errors), p50 {r['p50']:.1f} ms, {spread} {r[spread]:.1f} ms, "
        f"p99 {r['p99']:.1f} ms, max {r['max']:.1f} ms; load avg at start {r['load']:.2f}"
    )


def print_call_run(r: dict, rate: str, per: str, noun: str, label: str, others: tuple[str, ...] = ()) -> None:
    """A measured run of calls judged one by one (``Tally``): its line, where the CPU went
    (``others``: the meter's other processes, e.g. "target"), the errors by kind and the
    problems the script's checks found (``r["problems"]``, each after ``label``)."""
    print_run_line(r, rate, "calls", "p95")
    elsewhere = "".join(f"{name} {r[name + '_cpu']:.2f}, " for name in others)
    print(
        f"    CPU (cores busy): clients {r['client_cpu']:.2f}, {elsewhere}server {r['server_cpu']:.2f} "
        f"({r['server_ms_per_call']:.2f} ms per {per}; per process "
        f"{' '.join(f'{c:.2f}' for c in r['per_process'])}; {r['server_system_share'] * 100:.0f}% in the kernel), "
        f"postgres {r['postgres_cpu']:.2f} ({r['postgres_ms_per_call']:.2f} ms per {per}), machine "
        f"{r['machine_cpu']:.2f} of {os.cpu_count()}; {noun} per commit {r['per_commit']:.1f}"
    )
    for kind, count in r["error_kinds"].items():
        print(f"    error: {count} × {kind}")
    for problem in r["problems"]:
        print(f"    {label}: {problem}")


def run_columns(rate: str, spread: str) -> list[tuple[str, str]]:
    """The table's first columns (header, format of a row's fields)."""
    return [
        ("Workers", "{workers}"),
        ("Run", "{run}"),
        ("Load avg", "{load:.2f}"),
        (rate, "{rps:,.0f}"),
        ("p50 ms", "{p50:.1f}"),
        (f"{spread} ms", "{" + spread + ":.1f}"),
        ("p99 ms", "{p99:.1f}"),
        ("max ms", "{max:.1f}"),
        ("Errors", "{errors}"),
    ]


def run_passed(row: dict) -> bool:
    """A measured run with no error and nothing its checks found wrong."""
    return row["errors"] == 0 and not row["problems"]


def call_columns(rate: str, per: str, noun: str, others: tuple[str, ...] = (), postgres_per_call: bool = False):
    """The columns of ``print_call_run``'s figures: ``rate`` ("Executions/s"), CPU ``per`` call
    ("call"), ``noun`` per commit ("Executions"), the meter's ``others`` ("target")."""
    return [
        *run_columns(rate, "p95"),
        ("CPU clients", "{client_cpu:.2f}"),
        *((f"CPU {name}", "{" + name + "_cpu:.2f}") for name in others),
        ("CPU server", "{server_cpu:.2f}"),
        (f"Server ms/{per}", "{server_ms_per_call:.2f}"),
        ("CPU postgres", "{postgres_cpu:.2f}"),
        *([(f"PostgreSQL ms/{per}", "{postgres_ms_per_call:.2f}")] if postgres_per_call else []),
        ("CPU machine", "{machine_cpu:.2f}"),
        (f"{noun} per commit", "{per_commit:.1f}"),
    ]


def print_table(title: str, columns: list[tuple[str, str]], rows: list[dict]) -> None:
    """A markdown table of the runs, after ``title``; numbers right-aligned."""
    print(f"\n{title}\n")
    print("| " + " | ".join(header for header, _ in columns) + " |")
    print("|" + "---:|" * len(columns))
    for r in rows:
        print("| " + " | ".join(cell.format(**r) for _, cell in columns) + " |")


# --- main: options and time limit -------------------------------------------------------------------


def add_server_arguments(parser, sweep_help: str) -> None:
    parser.add_argument("--workers", type=int, default=2, help="uvicorn worker processes (default 2)")
    parser.add_argument("--sweep", help=sweep_help)


def add_window_arguments(parser, concurrency: int, who: str) -> None:
    parser.add_argument(
        "--concurrency", type=int, default=concurrency, help=f"concurrent {who} (default {concurrency})"
    )
    parser.add_argument("--duration", type=float, default=20.0, help="measured seconds per run (default 20)")
    parser.add_argument("--warmup", type=float, default=3.0, help="warm-up seconds before each run (default 3)")
    parser.add_argument("--repeat", type=int, default=1, help="measured runs per configuration (default 1)")


def add_run_arguments(parser, no_load: str, target: str) -> None:
    parser.add_argument("--no-load", action="store_true", help=f"skip the HTTP load ({no_load})")
    parser.add_argument("--fresh", action="store_true", help="drop and recreate the database first")
    parser.add_argument("--strict", action="store_true", help=f"exit 1 when {target} is missed")
    parser.add_argument("--time-limit", type=float, default=1800.0, help="abort after this many seconds")


class TimeLimitExceeded(Exception):
    pass


def arm_time_limit(seconds: float, stop_on_term: bool = True) -> None:
    """``TimeLimitExceeded`` after ``seconds``; with ``stop_on_term``, SIGTERM (and SIGINT,
    when a shell started the script in the background) raise ``KeyboardInterrupt``, so the
    script stops its server on kill as on Ctrl-C."""

    def on_alarm(signum, frame):
        raise TimeLimitExceeded(f"time limit of {seconds:.0f} s exceeded")

    def on_term(signum, frame):
        raise KeyboardInterrupt("SIGTERM")

    signal.signal(signal.SIGALRM, on_alarm)
    if stop_on_term:
        signal.signal(signal.SIGTERM, on_term)
        if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:  # started in the background by a shell
            signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.alarm(max(1, int(seconds)))


def begin_load(args, counts: tuple[str, ...] = ("concurrency", "client_processes")) -> str:
    """What a load script does first: check ``DATABASE_URL`` and ``REDIS_URL`` are local and
    the options ``counts`` and ``--duration`` positive, arm the time limit, print the machine,
    recreate the database with ``--fresh``; the URL."""
    database_url = scratch_database_url()
    check_loopback(server_env()["REDIS_URL"], "REDIS_URL")
    if min(getattr(args, name) for name in counts) < 1 or args.duration <= 0:
        names = [f"--{name.replace('_', '-')}" for name in (*counts, "duration")]
        raise SystemExit(f"{', '.join(names[:-1])} and {names[-1]} must be positive")
    arm_time_limit(args.time_limit)
    (ROOT / "var").mkdir(exist_ok=True)
    print(f"Machine: {machine_line()}")
    if args.fresh:
        recreate_database(database_url)
    return database_url


def sweep(args, rows: list[dict], header: str, measure) -> None:
    """One server per worker count in turn (``--workers``, or each of ``--sweep``): its runs,
    ``measure(workers)``, appended to ``rows``."""
    for workers in [int(w) for w in args.sweep.split(",")] if args.sweep else [args.workers]:
        print(f"\nworkers={workers}, {header}:")
        rows.extend(measure(workers))


def fast_enough(throughput: float, p99_ms: float):
    """``report_best``'s predicates for a target of ``throughput`` calls/s with p99 ≤ ``p99_ms``:
    (a run without errors within the p99, and such a run at the throughput too)."""

    def within(row: dict) -> bool:
        return row["errors"] == 0 and row["p99"] <= p99_ms

    def meets(row: dict) -> bool:
        return within(row) and row["rps"] >= throughput

    return within, meets


def report_best(rows: list[dict], args, rate: str, target: str, preferred, meets) -> bool:
    """Print the best run, the fastest of the ``preferred`` ones (of all when none is), and
    whether it ``meets`` the target (``target``: its wording); False when it does not and
    ``--strict`` is set."""
    best = max(rows, key=lambda r: (preferred(r), r["rps"]))
    verdict = "met" if meets(best) else "not met"
    print(
        f"\nBest: {best['workers']} worker(s): {best['rps']:,.0f} {rate}, p99 {best['p99']:.1f} ms "
        f"(target {target}: {verdict})"
    )
    return meets(best) or not args.strict


def run_main(body, report) -> int:
    """A script's measurements, ``body(rows)``: it appends its runs to ``rows`` and returns
    whether everything went well. On the time limit, Ctrl-C or SIGTERM the runs so far are
    printed (``report(rows)``) and the exit status is 1; the alarm is cleared whatever
    happens."""
    rows: list[dict] = []
    try:
        ok = body(rows)
    except (TimeLimitExceeded, KeyboardInterrupt) as exc:
        print(f"aborted: {str(exc) or 'interrupted'}", file=sys.stderr)
        if rows:
            report(rows)
        return 1
    finally:
        signal.alarm(0)
    print(f"\nMachine at the end: load average {load_average()}")
    return 0 if ok else 1
