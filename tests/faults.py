"""Processes the fault tests start, break and stop themselves (never the shared services)."""

import shutil
import socket
import subprocess
import time
from contextlib import contextmanager

import pytest


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_for_port(port: int, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.02)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port}")


class RedisProcess:
    """A throwaway redis-server on a free port of 127.0.0.1, no persistence."""

    def __init__(self):
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process = None

    def start(self) -> "RedisProcess":
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.skip("redis-server is not installed")
        self.process = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        _wait_for_port(self.port)
        return self

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(5)


@contextmanager
def redis_process():
    server = RedisProcess().start()
    try:
        yield server
    finally:
        server.kill()


class Server:
    """``governance.asgi:application`` under uvicorn in a child process, on a free port."""

    def __init__(self, database_url: str, port: int | None = None, **env):
        import os
        import sys

        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        environment = {**os.environ, "DATABASE_URL": database_url, "DJANGO_SETTINGS_MODULE": "tests.settings", **env}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "governance.asgi:application", "--port", str(self.port)]
            + ["--host", "127.0.0.1", "--log-level", "warning"],
            env=environment,
            stdout=subprocess.DEVNULL,
            stderr=open(os.environ.get("MANDATE_SERVER_LOG", os.devnull), "ab"),  # noqa: SIM115
        )
        _wait_for_port(self.port, timeout=20)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)


@contextmanager
def server(database_url: str, port: int | None = None, **env):
    """``port``: a port chosen beforehand (``free_port()``), when ``env`` must name it, e.g.
    ``PUBLIC_BASE_URL``."""
    running = Server(database_url, port, **env)
    try:
        yield running
    finally:
        running.stop()


def database_url_named(application_name: str) -> str:
    """The test database's URL, its connections named ``application_name`` (so a test ends
    only its own with ``pg_terminate_backend``)."""
    from django.db import connection

    params = connection.settings_dict
    return (
        f"postgres://{params['USER']}{':' + params['PASSWORD'] if params['PASSWORD'] else ''}"
        f"@{params['HOST'] or '127.0.0.1'}:{params['PORT'] or 5432}/{params['NAME']}"
        f"?application_name={application_name}"
    )
