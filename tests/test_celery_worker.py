"""A real Celery worker, on the configured broker (filesystem by default, Redis when
REDIS_URL is set), runs a real task against the test database."""

import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connection

from evidence.services.chain import EventDraft, append_events
from evidence.tasks import verify_ledger_task

ROOT = Path(__file__).resolve().parent.parent


def _database_url() -> str:
    db = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{db['NAME']}"
    return f"postgres://{db['USER']}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


@pytest.mark.django_db(transaction=True)
def test_worker_executes_the_ledger_verification_task():
    append_events("celery", [EventDraft("A"), EventDraft("B"), EventDraft("C")])
    queue = f"test-{uuid.uuid4().hex[:8]}"
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "governance.settings",
        "SECRET_KEY": settings.SECRET_KEY,
        "DATABASE_URL": _database_url(),
        "MANDATE_VAR_DIR": str(settings.VAR_DIR),
        "DB_POOL": "false",
    }
    worker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "governance",
            "worker",
            "--pool",
            "solo",
            "-Q",
            queue,
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
            "--loglevel",
            "INFO",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        verify_ledger_task.apply_async(queue=queue)
        deadline, seen = time.monotonic() + 60, []
        os.set_blocking(worker.stdout.fileno(), False)
        while time.monotonic() < deadline:
            line = worker.stdout.readline()
            if not line:
                if worker.poll() is not None:
                    break
                time.sleep(0.1)
                continue
            seen.append(line)
            if "evidence.verify_ledger" in line and "succeeded" in line:
                break
        output = "".join(seen)
        assert "succeeded" in output, output
        assert "'valid': True" in output and "'events_checked': 3" in output, output
    finally:
        worker.terminate()
        worker.wait(timeout=20)
