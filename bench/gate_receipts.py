"""Benchmark: the action gate's receipts and ledger queries (issue 12; docs/gate.md).

Against the PostgreSQL database in ``DATABASE_URL`` (loopback only; a scratch database: the
ledger and receipts are append-only, nothing is deleted), the script:

1. times the parts of ``evidence.services.receipts.issue_receipt``: the Ed25519 signature
   alone, a receipt inside an open transaction (its marginal cost), and whole receipts
   issued one per transaction, each with its ``GATE_ACTION_CALL`` ledger event (what the
   pipeline's transaction writes), then without the event; then receipt + event from
   ``--threads`` threads (default 4), the event appended last or first (the append holds
   the ledger lock until commit);
2. makes sure the ledger holds at least ``--events`` gate events (default 100,000: traces of
   two events over 20 actions, 200 principals, 5,000 sessions; decisions 85 % allow, 8 % deny,
   5 % pending_approval, 2 % error) plus ``--other-events`` non-gate events (default 50,000);
3. times ``gate_events`` (``GET /v1/audit/events``) for each filter, median of ``--runs``,
   and prints the plan's access path;
4. times appending gate events with and without the six partial indexes (they are dropped
   and rebuilt);
5. with ``--compare-gin``, the alternative: one GIN index (``jsonb_path_ops``) on the payload
   of gate events and containment queries;
6. times ``verify_receipts`` over every receipt.

Usage:

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/h_gatebench SECRET_KEY=bench \\
        .venv/bin/python bench/gate_receipts.py [--receipts 3000] [--events 100000] [--compare-gin]
"""

import argparse
import os
import platform
import statistics
import time
from datetime import UTC, datetime, timedelta

import loadkit

loadkit.in_process_env()

ACTIONS = [f"action_{n:02d}" for n in range(20)]
PRINCIPALS = [f"agent-{n:03d}" for n in range(200)]
SESSIONS = 5000


def decision_of(n: int) -> str:
    slot = n % 100
    return "allow" if slot < 85 else "deny" if slot < 93 else "pending_approval" if slot < 98 else "error"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--receipts", type=int, default=3000)
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--other-events", type=int, default=50_000)
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--compare-gin", action="store_true")
    args = parser.parse_args()

    loadkit.scratch_database_url()

    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    print(
        f"# gate receipts and ledger queries — {platform.node()}, {os.cpu_count()} CPUs, {datetime.now(UTC):%Y-%m-%d}"
    )
    receipts_part(args)
    ledger_part(args)


def receipts_part(args):
    from django.db import transaction
    from django.utils import timezone

    from evidence.choices import KeyAlgorithm
    from evidence.services.chain import append_events
    from evidence.services.gate_events import gate_event
    from evidence.services.keys import active_signer
    from evidence.services.receipts import issue_receipt, verify_receipts

    _, private = active_signer(KeyAlgorithm.ED25519)
    message = ("sha256:" + "ab" * 32).encode()
    n = 20_000
    start = time.perf_counter()
    for _ in range(n):
        private.sign(message)
    sign_us = (time.perf_counter() - start) / n * 1e6

    def fields(index: int) -> dict:
        now = timezone.now()
        return {
            "grant_id": f"grant_bench{index}",
            "provider_module_digest": "builtin:http_api",
            "provider_receipt": {"status": 200, "headers": {"content-type": "application/json"}, "body": "x" * 400},
            "normalized_result": {"kind": "success", "summary": "HTTP 200 OK"},
            "verification_outcome": {"status": "verified", "evidence": {"status_code": 200}},
            "effect_evidence": [],
            "started_at": now - timedelta(milliseconds=40),
            "finished_at": now,
            "failure_class": None,
            "trace_id": f"trc_bench{index:08d}{time.time_ns()}",
            "action_id": "http_fetch",
            "session_id": "ses_bench",
        }

    def event_of(trace: str, **details):
        return gate_event(
            "GATE_ACTION_CALL",
            trace_id=trace,
            action_id="http_fetch",
            principal="agent-bench",
            session_id="ses_bench",
            decision="allow",
            **details,
        )

    def one(with_event: bool, index: int, event_first: bool = False):
        receipt_fields = fields(index)
        trace = receipt_fields["trace_id"]
        with transaction.atomic():
            if event_first:  # the ledger lock is taken here and held until commit
                append_events(trace, [event_of(trace)], new_chain=True)
            receipt = issue_receipt(**receipt_fields)
            if with_event and not event_first:
                event = event_of(trace, receipt_id=receipt.receipt_id, result_hash=receipt.result_hash)
                append_events(trace, [event], new_chain=True)

    rows = []
    for with_event in (True, False):
        latencies = []
        start = time.perf_counter()
        for index in range(args.receipts):
            begin = time.perf_counter()
            one(with_event, index)
            latencies.append(time.perf_counter() - begin)
        elapsed = time.perf_counter() - start
        latencies.sort()
        rows.append(
            (
                "receipt + ledger event, one transaction" if with_event else "receipt alone, one transaction",
                args.receipts / elapsed,
                latencies[len(latencies) // 2] * 1000,
                latencies[int(len(latencies) * 0.99)] * 1000,
            )
        )
    with transaction.atomic():
        batch = [fields(index) for index in range(args.receipts)]
        start = time.perf_counter()
        for receipt_fields in batch:
            issue_receipt(**receipt_fields)
        marginal_us = (time.perf_counter() - start) / args.receipts * 1e6

    print("\n## issue_receipt (one thread)\n")
    print(f"Ed25519 signature alone: {sign_us:.1f} µs; a receipt inside an open transaction: {marginal_us:.0f} µs\n")
    print("| what | per second | p50 ms | p99 ms |\n|---|---|---|---|")
    for name, rate, p50, p99 in rows:
        print(f"| {name} | {rate:,.0f} | {p50:.2f} | {p99:.2f} |")

    print(f"\n## receipt + ledger event per transaction, {args.threads} threads\n")
    print("| order in the transaction | executions/s |\n|---|---|")
    for event_first in (False, True):
        rate = threaded(args.threads, args.receipts // args.threads, lambda i, ef=event_first: one(True, i, ef))
        name = "ledger event, then receipt" if event_first else "receipt, then ledger event (last)"
        print(f"| {name} | {rate:,.0f} |")

    start = time.perf_counter()
    verdict = verify_receipts()
    elapsed = time.perf_counter() - start
    print(
        f"\nverify_receipts: {verdict.receipts_checked:,} receipts in {elapsed:.2f} s "
        f"({verdict.receipts_checked / elapsed:,.0f}/s), valid={verdict.valid}"
    )


def threaded(threads: int, each: int, work) -> float:
    import threading

    from django.db import connection

    barrier = threading.Barrier(threads + 1)

    def run(offset):
        barrier.wait()
        try:
            for index in range(each):
                work(offset + index)
        finally:
            connection.close()

    workers = [threading.Thread(target=run, args=(n * each,)) for n in range(threads)]
    for worker in workers:
        worker.start()
    barrier.wait()
    start = time.perf_counter()
    for worker in workers:
        worker.join()
    return threads * each / (time.perf_counter() - start)


def ensure_events(args):
    from django.db import transaction

    from evidence.models import GATE_EVENTS, AuditEvent
    from evidence.services.chain import EventDraft, draft_rows, store_rows
    from evidence.services.gate_events import gate_event

    have = AuditEvent.objects.filter(GATE_EVENTS, chain_id__startswith="trc_load").count()
    base = datetime.now(UTC) - timedelta(days=30)
    made = have
    while made < args.events:
        rows = []
        for _ in range(250):
            n = made // 2
            trace = f"trc_load{n:09d}"
            moment = base + timedelta(seconds=n * 10)
            drafts = [
                gate_event(
                    "GATE_LEASE_ISSUED" if made % 2 == 0 else "GATE_ACTION_CALL",
                    trace_id=trace,
                    action_id=ACTIONS[n % len(ACTIONS)],
                    principal=PRINCIPALS[n % len(PRINCIPALS)],
                    session_id=f"ses_load{n % SESSIONS:05d}",
                    decision=decision_of(n),
                    reason="",
                )
            ]
            drafts[0].occurred_at = moment
            rows += draft_rows(trace, drafts, made % 2, "")
            made += 1
        with transaction.atomic():
            store_rows(rows)
    others = AuditEvent.objects.filter(chain_id__startswith="env_load").count()
    while others < args.other_events:
        rows = []
        for _ in range(500):
            rows += draft_rows(f"env_load{others:09d}", [EventDraft("ENVELOPE_CREATED", {"state": "received"})])
            others += 1
        with transaction.atomic():
            store_rows(rows)
    return made - have


def ledger_part(args):
    from django.db import connection

    from evidence.models import AuditEvent
    from evidence.services.gate_events import GateEventFilter, gate_events

    added = ensure_events(args)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE evidence_auditevent")
    total = AuditEvent.objects.count()
    print(
        f"\n## GET /v1/audit/events on {args.events:,} gate events ({total:,} events in the ledger; {added:,} added)\n"
    )
    middle = datetime.now(UTC) - timedelta(days=30) + timedelta(seconds=args.events // 4 * 10)
    cases = [
        ("no filter", GateEventFilter()),
        ("trace_id", GateEventFilter(trace_id="trc_load000012345")),
        ("session_id", GateEventFilter(session_id="ses_load00042")),
        ("action_id", GateEventFilter(action_id="action_07")),
        ("principal", GateEventFilter(principal="agent-042")),
        ("decision=allow (85 %)", GateEventFilter(decision="allow")),
        ("decision=error (2 %)", GateEventFilter(decision="error")),
        ("action_id + decision=deny", GateEventFilter(action_id="action_07", decision="deny")),
        ("principal + before (mid-ledger)", GateEventFilter(principal="agent-042", before=middle)),
        ("after + before (one hour)", GateEventFilter(after=middle, before=middle + timedelta(hours=1))),
        ("decision=allow, limit 1000", GateEventFilter(decision="allow", limit=1000)),
    ]
    print("| filter | rows | median ms | access path |\n|---|---|---|---|")
    for name, query in cases:
        rows, median, plan = time_query(gate_events, query, args.runs)
        print(f"| {name} | {rows} | {median:.2f} | {plan} |")

    print("\n## Appending gate events: cost of the six partial indexes\n")
    print("| indexes | events/s (50 per transaction, 5,000 events) |\n|---|---|")
    with_indexes = time_appends(5000)
    from evidence.models import AuditEvent as Model

    gate_indexes = [index for index in Model._meta.indexes if index.name.startswith("evidence_gate_")]
    with connection.schema_editor() as editor:
        for index in gate_indexes:
            editor.remove_index(Model, index)
    without = time_appends(5000)
    with connection.schema_editor() as editor:
        for index in gate_indexes:
            editor.add_index(Model, index)
    print(f"| the six partial indexes | {with_indexes:,.0f} |\n| none | {without:,.0f} |")

    if args.compare_gin:
        compare_gin(args, cases, gate_indexes)


def time_query(function, query, runs):
    from django.db import connection

    times = []
    rows = len(function(query))  # warm
    for _ in range(runs):
        start = time.perf_counter()
        rows = len(function(query))
        times.append((time.perf_counter() - start) * 1000)
    with connection.cursor() as cursor:
        sql, params = last_query_sql(function, query)
        cursor.execute("EXPLAIN " + sql, params or None)
        plan = [line for (line,) in cursor.fetchall()]
    return rows, statistics.median(times), access_path(plan)


def last_query_sql(function, query):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as captured:
        function(query)
    return captured.captured_queries[-1]["sql"], ()


def access_path(plan: list[str]) -> str:
    for line in plan:
        for marker in ("Index Scan", "Index Only Scan", "Bitmap Index Scan", "Seq Scan"):
            if marker in line:
                text = line.strip().lstrip("->").strip()
                return text.split("  (")[0]
    return plan[0]


def time_appends(count: int) -> float:
    from django.db import transaction

    from evidence.services.chain import append_events
    from evidence.services.gate_events import gate_event

    stamp = int(time.time() * 1000)
    start = time.perf_counter()
    for batch in range(count // 50):
        with transaction.atomic():
            for n in range(50):
                trace = f"trc_append{stamp}{batch:05d}{n:02d}"
                event = gate_event(
                    "GATE_ACTION_CALL",
                    trace_id=trace,
                    action_id=ACTIONS[n % 20],
                    principal=PRINCIPALS[n],
                    session_id=f"ses_append{batch}",
                    decision="allow",
                )
                append_events(trace, [event], new_chain=True)
    return count / (time.perf_counter() - start)


def compare_gin(args, cases, gate_indexes):
    """One GIN index over gate events' payloads instead of the six B-trees."""
    from django.db import connection

    from evidence.models import GATE_EVENTS, AuditEvent

    def contained(query):
        match = {
            key: getattr(query, key)
            for key in ("trace_id", "action_id", "principal", "session_id", "decision")
            if getattr(query, key) is not None
        }
        events = AuditEvent.objects.filter(GATE_EVENTS)
        if match:
            events = events.filter(payload__contains=match)
        if query.after:
            events = events.filter(occurred_at__gt=query.after)
        if query.before:
            events = events.filter(occurred_at__lt=query.before)
        return list(events.order_by("-occurred_at", "-ledger_seq")[: query.limit])

    with connection.schema_editor() as editor:
        for index in gate_indexes[1:]:  # keep the time index: unfiltered pages need it either way
            editor.remove_index(AuditEvent, index)
    with connection.cursor() as cursor:
        cursor.execute(
            "CREATE INDEX bench_gate_payload_gin ON evidence_auditevent USING gin (payload jsonb_path_ops) "
            "WHERE event_type::text LIKE 'GATE\\_%'"
        )
        cursor.execute("ANALYZE evidence_auditevent")
    print("\n## The alternative: one GIN (jsonb_path_ops) index, containment queries\n")
    print("| filter | rows | median ms | access path |\n|---|---|---|---|")
    for name, query in cases:
        rows, median, plan = time_query(contained, query, args.runs)
        print(f"| {name} | {rows} | {median:.2f} | {plan} |")
    gin_rate = time_appends(5000)
    print(f"\nappends with the GIN index and the time index: {gin_rate:,.0f} events/s")
    with connection.cursor() as cursor:
        cursor.execute("DROP INDEX bench_gate_payload_gin")
    with connection.schema_editor() as editor:
        for index in gate_indexes[1:]:
            editor.add_index(AuditEvent, index)


if __name__ == "__main__":
    main()
