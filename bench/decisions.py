"""Decisions per second through the envelopes core's one decision path (issue 9).

Target: ≥ 500 decisions/s on PostgreSQL, each with its evidence (hash-chained events), its
outbox row (a webhook delivery) and its notification (the bus, to Redis when REDIS_URL is
set). Submits ``--requests`` agents' requests on a fresh organization (each with a return
webhook, so every decision writes a delivery row), then decides them:

- ``batch``: ``decide_many`` in batches of ``--batch`` (the bulk path: the inbox's bulk
  acknowledge, a person approving many at once, the long-poll benchmark's bulk decision);
- ``single``: one ``act()`` per decision, each its own transaction, from ``--threads``
  threads (people deciding one card at a time).

Checks afterwards: every request approved, one delivery row per decision, every chain valid.
Stops by itself (``--time-limit``). Leaves its rows (the ledger is append-only): use a
scratch database, e.g. ``createdb -h 127.0.0.1 -U postgres h_decisions``::

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/h_decisions SECRET_KEY=bench \\
        .venv/bin/python bench/decisions.py [--requests 3000] [--batch 500] [--threads 4]
"""

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import threading
import time
import urllib.parse
import uuid
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def setup_django():
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "governance.settings")
    os.environ.setdefault("MANDATE_WEBHOOK_ALLOW_PRIVATE", "true")
    import django

    django.setup()


def check_target():
    url = os.environ.get("DATABASE_URL", "")
    host = urllib.parse.urlparse(url).hostname
    if not url.startswith("postgres") or host not in ("127.0.0.1", "localhost", "::1"):
        raise SystemExit("DATABASE_URL must point at a scratch PostgreSQL database on loopback")


def prepare(count: int):
    from envelopes.requests.channels import create_invite, register_channel
    from envelopes.requests.submissions import submit_request
    from governance.choices import Role
    from governance.services.people import create_person, ensure_organization

    tag = uuid.uuid4().hex[:8]
    organization = ensure_organization(f"bench-decisions-{tag}", f"Decisions bench {tag}")
    owner = create_person(organization, f"bench-owner-{tag}")
    approvers = [
        create_person(organization, f"bench-approver-{tag}-{i}", roles=[Role.GOVERNANCE_APPROVER]) for i in range(4)
    ]
    _, token = create_invite(owner)
    channel, _, _ = register_channel(token, name=f"bench {tag}")
    data = {
        "type": "approval_request",
        "title": "bench: may I?",
        "return_mode": "both",
        "return_webhook": "http://127.0.0.1:9/bench-hook",
    }
    raw = json.dumps(data)
    ids = [str(submit_request(channel, data, raw).pk) for _ in range(count)]
    return organization, approvers, ids


def run_batches(organization, approver, ids, batch: int) -> float:
    from django.db import transaction

    from envelopes.delivery import outbox
    from envelopes.services.decide import Actor, Decision, decide_many

    outbox_dispatch, outbox.dispatch = outbox.dispatch, lambda *a, **k: None  # rows only: no worker here
    actor = Actor.of_person(approver)
    started = time.perf_counter()
    try:
        for start in range(0, len(ids), batch):
            with transaction.atomic():
                chunk = ids[start : start + batch]
                outcomes = decide_many(organization.pk, [(rid, actor, Decision("approve")) for rid in chunk])
            refused = [o.error for o in outcomes if o.error is not None]
            if refused:
                raise SystemExit(f"refused: {refused[:3]}")
    finally:
        outbox.dispatch = outbox_dispatch
    return time.perf_counter() - started


def run_singles(organization, approvers, ids, threads: int) -> float:
    from django.db import connections

    from envelopes.delivery import outbox
    from envelopes.requests.decisions import act

    outbox_dispatch, outbox.dispatch = outbox.dispatch, lambda *a, **k: None
    shares = [ids[i::threads] for i in range(threads)]
    errors = []

    def work(approver, share):
        try:
            for request_id in share:
                act(organization.pk, request_id, approver, "approve")
        except Exception as exc:  # reported below
            errors.append(exc)
        finally:
            connections.close_all()

    workers = [threading.Thread(target=work, args=(approvers[i % len(approvers)], shares[i])) for i in range(threads)]
    started = time.perf_counter()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    elapsed = time.perf_counter() - started
    outbox.dispatch = outbox_dispatch
    if errors:
        raise SystemExit(f"errors: {errors[:3]}")
    return elapsed


def verify(ids) -> str:
    from envelopes.models import ApprovalRequest, Delivery
    from evidence.services.verification import verify_chain

    approved = ApprovalRequest.objects.filter(pk__in=ids, status="approved").count()
    deliveries = Delivery.objects.filter(request_id__in=ids, event="decision").count()
    invalid = sum(1 for rid in ids[:: max(1, len(ids) // 200)] if not verify_chain(rid).valid)
    if approved != len(ids) or deliveries != len(ids) or invalid:
        raise SystemExit(f"check failed: {approved} approved, {deliveries} deliveries, {invalid} invalid chains")
    return f"{approved:,} approved, {deliveries:,} delivery rows, sampled chains valid"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=3000, help="requests decided by each mode")
    parser.add_argument("--batch", type=int, default=500, help="decisions per decide_many call")
    parser.add_argument("--threads", type=int, default=4, help="threads calling act() in the single mode")
    parser.add_argument("--time-limit", type=int, default=900)
    args = parser.parse_args()
    check_target()
    signal.signal(signal.SIGALRM, lambda *_: sys.exit("time limit reached"))
    signal.alarm(args.time_limit)
    subprocess.run([sys.executable, str(ROOT / "manage.py"), "migrate", "--no-input", "-v", "0"], check=True)
    setup_django()

    rows = []
    organization, approvers, ids = prepare(args.requests)
    seconds = run_batches(organization, approvers[0], ids, args.batch)
    rows.append((f"decide_many, batches of {args.batch}", len(ids), seconds, verify(ids)))
    organization, approvers, ids = prepare(args.requests)
    seconds = run_singles(organization, approvers, ids, args.threads)
    rows.append((f"act() one per transaction, {args.threads} threads", len(ids), seconds, verify(ids)))

    print(f"machine: {platform.node()} ({os.cpu_count()} cores), {date.today().isoformat()}")
    print("| mode | decisions | seconds | decisions/s | checked |")
    print("|---|---|---|---|---|")
    for mode, count, seconds, checked in rows:
        print(f"| {mode} | {count:,} | {seconds:.2f} | {count / seconds:,.0f} | {checked} |")


if __name__ == "__main__":
    main()
