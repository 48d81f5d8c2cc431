"""Benchmark: integrity verification speed (issue 4, "Performance"); target ≥ 50,000 events/s.

Against the PostgreSQL database in ``DATABASE_URL`` (loopback only), the script:

1. migrates it and makes sure the ledger holds at least ``--events`` audit events (default
   200,000): the shortfall is appended through ``evidence.services.chain.append_events`` as
   11-event chains shaped like an accepted evaluation's envelope chain, 100 chains per
   transaction (events from earlier runs, e.g. ``bench/evaluate_load.py``, count too);
2. times ``evidence.services.verification.verify_ledger()`` over the whole ledger
   (``--runs`` times, default 2) and prints events/s;
3. times ``verify_chain`` over ``--chains`` chains (default 2,000, the most recent ones) and
   prints chains/s and events/s;
4. splits one pass into its parts on a sample: reading the events (as ORM objects or as
   tuples) versus re-hashing them (``recompute_hash``: ``evidence.canonical``, which uses
   the stdlib encoder where it writes exactly RFC 8785, + SHA-256), and compares the
   ``rfc8785`` package with a checked stdlib ``json.dumps`` path on the same events
   (byte-for-byte equality checked). ``verify_ledger`` itself reads tuples through a
   server-side cursor, with the payload as JSON text and the timestamp as its hashed text;
5. with ``--profile``, cProfiles one ``verify_ledger()`` and prints the hot spots.

Usage:

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/h_evalbench SECRET_KEY=bench \\
        .venv/bin/python bench/verify_speed.py [--events 200000] [--chains 2000] [--runs 2] [--profile]

The events it appends stay (the ledger is append-only: deleting them is exactly what
verification detects); use a scratch database. Exit status 1 when a verification reports
the ledger or a chain invalid (and, with ``--strict``, when the target is missed).
"""

import argparse
import cProfile
import hashlib
import json
import math
import os
import sys
import time
import uuid
from functools import partial

import loadkit

loadkit.in_process_env()

TARGET_EVENTS_PER_SECOND = 50_000
CHAINS_PER_TRANSACTION = 100


# --- data -------------------------------------------------------------------------------


def envelope_chain(index: int):
    """The 11 event drafts of an accepted evaluation (same types and payload shapes)."""
    from evidence.services.chain import EventDraft

    request_id = f"verify-bench-{index}"
    return [
        EventDraft(
            "ENVELOPE_CREATED",
            {"state": "received", "request_source": "bench", "request_id": request_id},
            "principal",
            "42",
        ),
        EventDraft("EVALUATION_STARTED", {"state": "evaluating"}),
        EventDraft("SURFACE_RESOLVED", {"surface_id": "surf-payment-release", "surface_version": 1}),
        EventDraft("AGENT_RESOLVED", {"agent_id": "agent-payments-prod", "operational_state": "active"}),
        EventDraft(
            "AUTHORITY_CHAIN_RESOLVED",
            {
                "grant_id": "grant-payments-agent-standard",
                "profile_id": "prof-payments-standard",
                "profile_version": 1,
                "agent_id": "agent-payments-prod",
            },
        ),
        EventDraft(
            "CONTEXT_VALIDATED",
            {
                "required_keys": ["account_id", "destination_country"],
                "provided_keys": ["account_id", "destination_country"],
                "passed": True,
            },
        ),
        EventDraft("CONFIDENCE_CHECKED", {"confidence_provided": 0.95, "confidence_threshold": 0.8, "passed": True}),
        EventDraft(
            "CONSEQUENCE_CHECKED",
            {
                "consequence_provided": {"type": "monetary", "amount": 500 + index % 1000, "currency": "GBP"},
                "consequence_threshold": {"type": "monetary", "amount": 10000, "currency": "GBP"},
                "passed": True,
            },
        ),
        EventDraft(
            "POLICY_EVALUATED", {"policy_reference": "payments.release", "result": "allow", "fail_mode": "closed"}
        ),
        EventDraft(
            "OUTCOME_RECORDED", {"outcome": "accept", "reason_code": "WITHIN_AUTHORITY", "state": "outcome_recorded"}
        ),
        EventDraft("ENVELOPE_CLOSED", {"state": "closed"}),
    ]


def ensure_events(target: int) -> dict:
    """Append 11-event chains until the ledger holds ``target`` events."""
    from django.db import transaction

    from evidence.models import LedgerHead
    from evidence.services.chain import append_events

    head = LedgerHead.objects.filter(pk=1).first()
    existing = head.seq if head else 0
    missing_chains = max(0, math.ceil((target - existing) / 11))
    if not missing_chains:
        return {"existing": existing, "appended": 0, "seconds": 0.0}
    print(f"appending {missing_chains * 11:,} events ({missing_chains:,} chains) to reach {target:,} ...")
    start = time.perf_counter()
    for first in range(0, missing_chains, CHAINS_PER_TRANSACTION):
        with transaction.atomic():
            for index in range(first, min(missing_chains, first + CHAINS_PER_TRANSACTION)):
                append_events(str(uuid.uuid4()), envelope_chain(existing + index), new_chain=True)
        done = min(missing_chains, first + CHAINS_PER_TRANSACTION)
        if done % 2000 == 0:
            print(f"  {done * 11:,} events appended, {time.perf_counter() - start:.0f} s")
    return {"existing": existing, "appended": missing_chains * 11, "seconds": time.perf_counter() - start}


# --- measurements -----------------------------------------------------------------------


def time_ledger(run: int) -> dict:
    from evidence.services.verification import verify_ledger

    load = os.getloadavg()[0]
    wall, cpu = time.perf_counter(), time.process_time()
    verdict = verify_ledger()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return {
        "what": "verify_ledger()",
        "run": run,
        "load": load,
        "events": verdict.events_checked,
        "seconds": wall,
        "cpu": cpu,
        "rate": verdict.events_checked / wall if wall else 0.0,
        "valid": verdict.valid,
        "detail": f"{verdict.error_kind}: {verdict.error_message}" if not verdict.valid else "",
    }


def recent_chains(count: int) -> list[str]:
    from evidence.models import AuditEvent

    rows = AuditEvent.objects.filter(sequence_no=1).order_by("-ledger_seq").values_list("chain_id", flat=True)
    return list(rows[:count])


def time_chains(run: int, chain_ids: list[str]) -> dict:
    from evidence.services.verification import verify_chain

    load = os.getloadavg()[0]
    events, invalid = 0, []
    wall, cpu = time.perf_counter(), time.process_time()
    for chain_id in chain_ids:
        verdict = verify_chain(chain_id)
        events += verdict.chain_length
        if not verdict.valid:
            invalid.append(f"{chain_id}: {verdict.error_kind}")
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return {
        "what": f"verify_chain() × {len(chain_ids):,}",
        "run": run,
        "load": load,
        "events": events,
        "seconds": wall,
        "cpu": cpu,
        "rate": events / wall if wall else 0.0,
        "chains_per_second": len(chain_ids) / wall if wall else 0.0,
        "valid": not invalid,
        "detail": "; ".join(invalid[:3]),
    }


def _i_json_plain(item):
    """``item`` ready for ``json.dumps`` with RFC 8785 output, or ``_NOT_PLAIN``.

    ``json.dumps(sort_keys=True, separators=(",", ":"), ensure_ascii=False)`` writes exactly
    RFC 8785 when keys are ASCII (UTF-16 order = code-point order), integers are in I-JSON's
    safe range and floats are finite, non-integral and in [1e-4, 1e16) — where Python's repr
    and ECMAScript's Number-to-string agree. Integral floats are turned into ints (RFC 8785
    writes 500.0 as 500). Strings need nothing: both escape exactly ``"``, ``\\`` and the
    control characters, with the same short forms and lower-case ``\\u00xx``.
    """
    if isinstance(item, str) or item is None or isinstance(item, bool):
        return item
    if isinstance(item, int):
        return item if -(2**53) < item < 2**53 else _NOT_PLAIN
    if isinstance(item, float):
        if not math.isfinite(item):
            return _NOT_PLAIN
        if item.is_integer():
            return int(item) if abs(item) < 2**53 else _NOT_PLAIN
        return item if 1e-4 <= abs(item) < 1e16 else _NOT_PLAIN
    if isinstance(item, dict):
        out = {}
        for key, value in item.items():
            if not (isinstance(key, str) and key.isascii()):
                return _NOT_PLAIN
            value = _i_json_plain(value)
            if value is _NOT_PLAIN:
                return _NOT_PLAIN
            out[key] = value
        return out
    if isinstance(item, list):
        out = [_i_json_plain(value) for value in item]
        return _NOT_PLAIN if any(value is _NOT_PLAIN for value in out) else out
    return _NOT_PLAIN


_NOT_PLAIN = object()


def fast_canonical_json(value) -> bytes | None:
    """RFC 8785 bytes through the stdlib's C encoder when provably identical; else None."""
    plain = _i_json_plain(value)
    if plain is _NOT_PLAIN:
        return None
    return json.dumps(plain, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def make_fast_event_hash():
    """``event_hash`` through the checked stdlib encoder (rfc8785 when the check says no)."""
    from evidence.canonical import canonical_json, format_timestamp

    sha256, dumps = hashlib.sha256, json.dumps

    def fast_event_hash(event) -> str:
        document = {
            "chain_id": event.chain_id,
            "sequence_no": event.sequence_no,
            "event_type": event.event_type,
            "performer_type": event.performer_type,
            "performer_id": event.performer_id,
            "payload": _i_json_plain(event.payload),
            "occurred_at": format_timestamp(event.occurred_at),
            "prev_hash": event.prev_hash,
        }
        if document["payload"] is _NOT_PLAIN:
            document["payload"] = event.payload
            return sha256(canonical_json(document)).hexdigest()
        return sha256(dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()).hexdigest()

    return fast_event_hash


def fast_ledger_hash(ledger_seq: int, event_hash: str, ledger_prev_hash: str) -> str:
    """``ledger_hash`` for its fixed shape (two hex strings and an integer)."""
    text = f'{{"event_hash":"{event_hash}","ledger_prev_hash":"{ledger_prev_hash}","ledger_seq":{int(ledger_seq)}}}'
    return hashlib.sha256(text.encode()).hexdigest()


def hashing_split(sample_size: int) -> dict:
    """On a sample: reading vs. re-hashing, and what faster reading and encoding would buy."""
    from evidence.canonical import canonical_json, format_timestamp, ledger_hash
    from evidence.models import AuditEvent
    from evidence.services.verification import recompute_hash

    def rate(count, seconds):
        return count / seconds if seconds else 0.0

    start = time.perf_counter()
    events = list(AuditEvent.objects.order_by("ledger_seq")[:sample_size])
    read = time.perf_counter() - start
    count = len(events)
    start = time.perf_counter()
    fields = ("chain_id", "sequence_no", "event_type", "performer_type", "performer_id", "payload", "occurred_at")
    rows = list(AuditEvent.objects.order_by("ledger_seq").values_list(*fields, "prev_hash", "hash")[:sample_size])
    read_tuples = time.perf_counter() - start
    assert len(rows) == count

    start = time.perf_counter()
    for event in events:
        recompute_hash(event)
    rehash = time.perf_counter() - start
    start = time.perf_counter()
    for event in events:
        ledger_hash(ledger_seq=event.ledger_seq, event_hash=event.hash, ledger_prev_hash=event.ledger_prev_hash)
    relink = time.perf_counter() - start

    fast_event_hash = make_fast_event_hash()
    start = time.perf_counter()
    fast_hashes = [fast_event_hash(event) for event in events]
    fast_rehash = time.perf_counter() - start
    start = time.perf_counter()
    fast_links = [fast_ledger_hash(e.ledger_seq, e.hash, e.ledger_prev_hash) for e in events]
    fast_relink = time.perf_counter() - start
    hash_mismatches = sum(1 for event, digest in zip(events, fast_hashes, strict=True) if digest != event.hash)
    link_mismatches = sum(1 for event, digest in zip(events, fast_links, strict=True) if digest != event.ledger_hash)

    documents = [
        {
            "chain_id": e.chain_id,
            "sequence_no": e.sequence_no,
            "event_type": e.event_type,
            "performer_type": e.performer_type,
            "performer_id": e.performer_id,
            "payload": e.payload,
            "occurred_at": format_timestamp(e.occurred_at),
            "prev_hash": e.prev_hash,
        }
        for e in events
    ]
    start = time.perf_counter()
    reference = [canonical_json(d) for d in documents]
    jcs = time.perf_counter() - start
    start = time.perf_counter()
    fast = [fast_canonical_json(d) for d in documents]
    fast_seconds = time.perf_counter() - start
    return {
        "count": count,
        "read_rate": rate(count, read),
        "read_tuples_rate": rate(count, read_tuples),
        "rehash_rate": rate(count, rehash),
        "relink_rate": rate(count, relink),
        "fast_rehash_rate": rate(count, fast_rehash),
        "fast_relink_rate": rate(count, fast_relink),
        "jcs_rate": rate(count, jcs),
        "fast_rate": rate(count, fast_seconds),
        "fallbacks": sum(1 for f in fast if f is None),
        "mismatches": sum(1 for f, r in zip(fast, reference, strict=True) if f is not None and f != r),
        "hash_mismatches": hash_mismatches,
        "link_mismatches": link_mismatches,
    }


def profile_ledger(top: int = 30) -> None:
    from evidence.services.verification import verify_ledger

    profiler = cProfile.Profile()
    profiler.enable()
    verdict = verify_ledger()
    profiler.disable()
    print(f"\nProfile of one verify_ledger() ({verdict.events_checked:,} events, profiler overhead included):")
    loadkit.print_profile(profiler, top)


# --- report -----------------------------------------------------------------------------


def machine_line() -> str:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SHOW server_version")
        server = cursor.fetchone()[0]
    return loadkit.machine_line(f"PostgreSQL {server}")


def print_table(rows: list[dict]) -> None:
    print("\n| Measurement | Run | Load avg | Events | Seconds | CPU s (this process) | Events/s | Valid |")
    print("|---|---:|---:|---:|---:|---:|---:|---|")
    for r in rows:
        print(
            f"| {r['what']} | {r['run']} | {r['load']:.2f} | {r['events']:,} | {r['seconds']:.2f} | {r['cpu']:.2f} "
            f"| {r['rate']:,.0f} | {'yes' if r['valid'] else 'NO: ' + r['detail']} |"
        )


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=200_000, help="events the ledger must hold (default 200,000)")
    parser.add_argument("--chains", type=int, default=2000, help="chains timed with verify_chain (default 2,000)")
    parser.add_argument("--runs", type=int, default=2, help="timed runs of each measurement (default 2)")
    parser.add_argument("--sample", type=int, default=20_000, help="events in the read/re-hash split (default 20,000)")
    parser.add_argument("--profile", action="store_true", help="cProfile one verify_ledger()")
    parser.add_argument("--split-only", action="store_true", help="skip the timed runs (sample split only)")
    parser.add_argument("--strict", action="store_true", help="exit 1 when the target is missed")
    parser.add_argument("--time-limit", type=float, default=1800.0, help="abort after this many seconds")
    return parser.parse_args(argv)


def measure(args, rows: list[dict]) -> bool:
    """The timed runs (appended to ``rows``), the split, the profile; whether every
    verification said valid (and, with ``--strict``, the target was met)."""
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    print(f"Machine: {machine_line()}")
    appended = ensure_events(args.events)
    if appended["appended"]:
        print(
            f"appended {appended['appended']:,} events in {appended['seconds']:.1f} s "
            f"({appended['appended'] / appended['seconds']:,.0f} events/s through append_events, "
            f"{CHAINS_PER_TRANSACTION} chains per transaction)"
        )
    chain_ids = recent_chains(args.chains)
    for run in range(1, args.runs + 1 if not args.split_only else 1):
        rows.append(time_ledger(run))
        print(f"  run {run}: verify_ledger {rows[-1]['rate']:,.0f} events/s (load avg {rows[-1]['load']:.2f})")
        rows.append(time_chains(run, chain_ids))
        print(
            f"  run {run}: verify_chain {rows[-1]['rate']:,.0f} events/s, "
            f"{rows[-1]['chains_per_second']:,.0f} chains/s (load avg {rows[-1]['load']:.2f})"
        )
    best = max((r["rate"] for r in rows if r["what"] == "verify_ledger()"), default=0.0)
    if rows:
        print_table(rows)
        verdict = "met" if best >= TARGET_EVENTS_PER_SECOND else "not met"
        print(f"\nBest verify_ledger: {best:,.0f} events/s (target ≥ {TARGET_EVENTS_PER_SECOND:,}: {verdict})")

    split = hashing_split(args.sample)
    print(
        f"\nWhere a pass goes, on the first {split['count']:,} events (events/s for each part alone):\n"
        f"| Part | Events/s |\n|---|---:|\n"
        f"| read as model instances (the ORM) | {split['read_rate']:,.0f} |\n"
        f"| read as tuples (values_list) | {split['read_tuples_rate']:,.0f} |\n"
        f"| event hash, recompute_hash (evidence.canonical + SHA-256) | {split['rehash_rate']:,.0f} |\n"
        f"| ledger hash, ledger_hash (evidence.canonical + SHA-256) | {split['relink_rate']:,.0f} |\n"
        f"| event hash, checked json.dumps + SHA-256 | {split['fast_rehash_rate']:,.0f} |\n"
        f"| ledger hash, fixed template | {split['fast_relink_rate']:,.0f} |\n"
        f"| encoding only (timestamp preformatted), rfc8785.dumps | {split['jcs_rate']:,.0f} |\n"
        f"| encoding only (timestamp preformatted), checked json.dumps | {split['fast_rate']:,.0f} |\n"
        f"\nFast paths checked against the stored hashes: {split['hash_mismatches']} event-hash and "
        f"{split['link_mismatches']} ledger-hash differences; the json.dumps path fell back to rfc8785 for "
        f"{split['fallbacks']} documents and differed in {split['mismatches']}."
    )
    if args.profile:
        profile_ledger()
    ok = all(r["valid"] for r in rows)
    return ok and not (args.strict and best < TARGET_EVENTS_PER_SECOND)


def main(argv=None) -> int:
    args = parse_args(argv)
    loadkit.scratch_database_url()
    loadkit.arm_time_limit(args.time_limit, stop_on_term=False)
    import django

    django.setup()
    return loadkit.run_main(partial(measure, args), print_table)


if __name__ == "__main__":
    sys.exit(main())
