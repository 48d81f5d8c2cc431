"""Benchmark: ``POST /governance/lease/heartbeat`` throughput and latency over HTTP (issue 14).

Target: ≥ 2,000 heartbeats/s on PostgreSQL across 10,000 devices, through the shared hot
path (``governance/api/device_leases.py``: wallet sessions and standings cached, one UPDATE
per group commit).

What the script does:

1. migrates the database in ``DATABASE_URL`` (PostgreSQL on loopback; ``--fresh`` drops and
   recreates it first) and makes ``--owners`` N organization roots ``org.benchhbNNN.root``,
   each with its root owner ``human.owner`` (an ownership wallet whose key is derived from N,
   so a second run reuses them), an active governance entitlement, and ``--devices`` D
   devices split among them, installed and active; each owner signs in with Sign-In with
   Ethereum (a real EIP-4361 message and signature) for a wallet session;
2. starts the real server (``uvicorn governance.asgi:application``, ``--workers`` N, DEBUG
   off, LOG_LEVEL=WARNING, no access log; ``bench/loadkit.py``'s ``Server``);
3. the correctness figure: ``--parked`` P devices are expired and parked by
   ``park_expired_devices``, then 4 heartbeats for each are sent at once: every answer must be
   a 200, each device revived exactly once (one ``lease.revived`` event) and its chain must
   verify;
4. per run: warms up, then drives a closed loop of ``--concurrency`` C clients for
   ``--duration`` seconds, each on one keep-alive HTTP/1.1 connection (connects 20 ms apart, so
   uvicorn spreads them over its workers); client k heartbeats devices k, k + C, k + 2C, ...
   in turn, so the clients together cycle through all D devices. Anything but a 200
   ``lease_refreshed`` is an error;
5. reports heartbeats/s, p50/p95/p99/max, errors, CPU during the measured window (clients,
   server and per server process, PostgreSQL backends, machine), the server's CPU per
   heartbeat and heartbeats per database commit (the group commit's sharing);
6. checks afterwards: no bench device is parked, every device heartbeated in the run holds a
   lease of ``MANDATE_DEVICE_LEASE_SECONDS`` from its last heartbeat, how many distinct
   devices the run reached, and that plain refreshes wrote no evidence;
7. in-process, counts the statements of one heartbeat through the hot route's steps with the
   session and standing cached (``hotpath.drive``; each one a round trip).

Usage:

    createdb -h 127.0.0.1 -U postgres h_hbbench
    DATABASE_URL=postgres://postgres@127.0.0.1:5432/h_hbbench SECRET_KEY=bench \\
        .venv/bin/python bench/heartbeat.py [--workers 2] [--owners 100] [--devices 10000] \\
        [--concurrency 32] [--duration 20] [--repeat 2]

Exit status: 0 when every run had no errors and the checks passed (and, with ``--strict``,
the target was met).
"""

import argparse
import asyncio
import hashlib
import json
import os
import sys
import time
from collections import Counter
from datetime import timedelta
from functools import partial
from urllib.parse import urlparse

import loadkit

THROUGHPUT_TARGET = 2000.0
HEARTBEAT_PATH = "/governance/lease/heartbeat"
PRINCIPAL_ID = "human.owner"
CONNECT_STAGGER = 0.02  # seconds between the clients' connects
HEARTBEATS_PER_PARKED = 4


def org_root_id(n: int) -> str:
    return f"org.benchhb{n:03d}.root"


# --- database ------------------------------------------------------------------------------


def owner_account(n: int):
    """Owner n's ownership wallet: a key derived from n, the same every run."""
    from eth_account import Account

    return Account.from_key(hashlib.sha256(f"mandate-bench-heartbeat-{n}".encode()).digest())


def sign_in(account) -> str:
    """A wallet session for ``account`` by Sign-In with Ethereum, as a launcher gets one."""
    from django.conf import settings
    from django.utils import timezone
    from eth_account.messages import encode_defunct

    from governance.services.wallet_sessions import expected_domain, issue_nonce, verify_sign_in
    from governance.siwe import format_message

    domain = expected_domain()
    message = format_message(
        domain=domain,
        address=account.address,
        statement="Keep my governed runtimes available.",
        uri=f"https://{domain}/launcher",
        chain_id=settings.MANDATE_SIWE_CHAIN_IDS[0],
        nonce=issue_nonce().nonce,
        issued_at=timezone.now(),
    )
    signature = "0x" + bytes(account.sign_message(encode_defunct(text=message)).signature).hex()
    return verify_sign_in(message, signature).secret


def make_owner(n: int, devices: int) -> list[tuple[str, bytes]]:
    """Organization root n, its owner with an active governance entitlement and ``devices``
    active devices; a new wallet session. Each device's (session, heartbeat body)."""
    from django.conf import settings
    from django.utils import timezone

    from entitlements.services.issuance import set_status_entitlement
    from governance.choices import AvailabilityState, InstallState, MembershipStatus, PrincipalRole, WalletPurpose
    from governance.models import Device, Organization, Principal, PrincipalWallet

    account = owner_account(n)
    root = org_root_id(n)
    organization, _ = Organization.objects.get_or_create(
        org_root_id=root, defaults={"slug": root.replace(".", "-"), "name": f"Heartbeat benchmark {n}"}
    )
    principal, _ = Principal.objects.update_or_create(
        organization=organization,
        principal_id=PRINCIPAL_ID,
        defaults={"role": PrincipalRole.ORG_ROOT_OWNER, "membership_status": MembershipStatus.ACTIVE},
    )
    PrincipalWallet.objects.get_or_create(principal=principal, address=account.address, purpose=WalletPurpose.OWNERSHIP)
    set_status_entitlement(
        organization.pk,
        principal=account.address,
        plan_id=settings.MANDATE_GOVERNANCE_PLAN_ID,
        status="active",
        expires_at=None,
        issued_by="bench",
    )
    now = timezone.now()
    names = [f"hb-{n:03d}-{k:05d}" for k in range(devices)]
    Device.objects.bulk_create(
        [
            Device(
                device_id=name,
                wallet=account.address,
                organization=organization,
                principal=principal,
                platform="linux",
                runtime_version="1.0.0",
                install_state=InstallState.ACTIVE,
                availability_state=AvailabilityState.ACTIVE,
                lease_expires_at=now + timedelta(days=30),
                activated_at=now,
            )
            for name in names
        ],
        ignore_conflicts=True,
        batch_size=2000,
    )
    secret = sign_in(account)
    return [
        (
            secret,
            json.dumps(
                {"wallet": account.address, "org_root_id": root, "principal_id": PRINCIPAL_ID, "device_id": name},
                separators=(",", ":"),
            ).encode(),
        )
        for name in names
    ]


def bench_devices():
    from governance.models import Device

    return Device.objects.filter(organization__org_root_id__startswith="org.benchhb")


def prepare_database(owners: int, devices: int) -> list[tuple[str, bytes]]:
    """Migrate; the owners and their devices, all installed, active and leased for 30 days;
    every device's (session, heartbeat body), interleaved across owners."""
    from django.core.management import call_command
    from django.utils import timezone

    from governance.choices import AvailabilityState, InstallState

    start = time.perf_counter()
    call_command("migrate", verbosity=0)
    per_owner = [devices // owners + (1 if n < devices % owners else 0) for n in range(owners)]
    fleets = [make_owner(n, count) for n, count in enumerate(per_owner)]
    bench_devices().update(
        install_state=InstallState.ACTIVE,
        availability_state=AvailabilityState.ACTIVE,
        lease_expires_at=timezone.now() + timedelta(days=30),
    )
    calls = [fleet[k] for k in range(max(per_owner)) for fleet in fleets if k < len(fleet)]
    print(
        f"database ready (migrate, {owners} organization roots and owners, {len(calls):,} devices, "
        f"{owners} wallet sessions by SIWE) in {time.perf_counter() - start:.1f} s"
    )
    return calls


def lease_counts() -> dict:
    """The bench's devices that are parked, and the lease events written."""
    from evidence.models import AuditEvent
    from governance.choices import AvailabilityState
    from governance.services.device_leases import PARKED_EVENT, REVIVED_EVENT

    counts = {
        "parked": bench_devices().filter(availability_state=AvailabilityState.PARKED).count(),
        "events": AuditEvent.objects.filter(event_type__in=[PARKED_EVENT, REVIVED_EVENT]).count(),
    }
    loadkit.close_connection()
    return counts


def check_run(before: dict, started) -> tuple[list[str], int]:
    """No device parked, no event written by plain refreshes, every device heartbeated since
    ``started`` leased for the setting's length from its heartbeat; how many were reached."""
    from django.conf import settings
    from django.db.models import F

    after = lease_counts()
    reached = bench_devices().filter(last_heartbeat_at__gte=started)
    length = timedelta(seconds=settings.MANDATE_DEVICE_LEASE_SECONDS - 1)
    short = reached.filter(lease_expires_at__lt=F("last_heartbeat_at") + length).count()
    count = reached.count()
    loadkit.close_connection()
    problems = []
    if after["parked"]:
        problems.append(f"{after['parked']} devices parked")
    if after["events"] != before["events"]:
        problems.append(f"{after['events'] - before['events']} lease events written by plain refreshes")
    if short:
        problems.append(f"{short} devices with a lease shorter than the setting")
    return problems, count


# --- the correctness figure ----------------------------------------------------------------------


def revive_parked(url: str, calls: list[tuple[str, bytes]], parked: int) -> list[str]:
    """Park ``parked`` devices, then send 4 heartbeats for each at once: 200s only, each
    revived once, its chain verifying."""
    import httpx
    from django.utils import timezone

    from evidence.models import AuditEvent
    from evidence.services.verification import verify_chain
    from governance.choices import AvailabilityState
    from governance.models import Device
    from governance.services.device_leases import REVIVED_EVENT, park_expired_devices
    from governance.services.install_rules import device_chain_id

    chosen = calls[:parked]
    names = [json.loads(body)["device_id"] for _, body in chosen]
    devices = list(bench_devices().filter(device_id__in=names))
    Device.objects.filter(pk__in=[d.pk for d in devices]).update(lease_expires_at=timezone.now() - timedelta(minutes=1))
    parked_now = park_expired_devices()
    revived_before = AuditEvent.objects.filter(event_type=REVIVED_EVENT).count()
    loadkit.close_connection()

    async def scenario():
        limits = httpx.Limits(max_connections=len(chosen) * HEARTBEATS_PER_PARKED)
        async with httpx.AsyncClient(base_url=url, limits=limits, timeout=60) as client:
            return await asyncio.gather(
                *(
                    client.post(
                        HEARTBEAT_PATH,
                        content=body,
                        headers={"Authorization": f"Bearer {session}", "Content-Type": "application/json"},
                    )
                    for session, body in chosen * HEARTBEATS_PER_PARKED
                )
            )

    answers = asyncio.run(scenario())
    outcomes = Counter(f"{a.status_code} {a.json().get('code', '')}".strip() for a in answers)
    revived = AuditEvent.objects.filter(event_type=REVIVED_EVENT).count() - revived_before
    still_parked = bench_devices().filter(availability_state=AvailabilityState.PARKED).count()
    broken = [d.device_id for d in devices if not verify_chain(device_chain_id(d)).valid]
    loadkit.close_connection()
    problems = []
    if parked_now != parked:
        problems.append(f"parked {parked_now}, expected {parked}")
    if dict(outcomes) != {"200": len(answers)}:
        problems.append(f"answers {dict(outcomes)}")
    if revived != parked or still_parked:
        problems.append(f"{revived} revivals for {parked} parked devices, {still_parked} still parked")
    if broken:
        problems.append(f"chains that do not verify: {broken[:5]}")
    print(
        f"  {parked} devices parked, then {len(answers)} heartbeats for them at once: "
        + ", ".join(f"{count} × {kind}" for kind, count in sorted(outcomes.items()))
        + f"; {revived} revived (one event each), chains verified"
        + ("" if not problems else f"; PROBLEMS: {problems}")
    )
    return problems


# --- the load clients (their own processes) -----------------------------------------------------


class Heartbeats(loadkit.Calls):
    """One client's heartbeats, cycling through its devices. Anything but a 200
    ``lease_refreshed`` is an error."""

    def __init__(self, tally, devices: list[tuple[str, bytes]], host, port):
        super().__init__(tally)
        self.requests = [
            (
                f"POST {HEARTBEAT_PATH} HTTP/1.1\r\nHost: {host}:{port}\r\nAuthorization: Bearer {session}\r\n"
                f"Content-Type: application/json\r\nConnection: keep-alive\r\nContent-Length: {len(body)}\r\n\r\n"
            ).encode()
            + body
            for session, body in devices
        ]

    def request(self, sequence: int) -> tuple[bytes, ...]:
        return (self.requests[sequence % len(self.requests)],)

    def answered(self, sequence: int, status: int, content: bytes) -> None:
        if status == 200 and content.startswith(b'{"status":"lease_refreshed","availability_state":"active"'):
            self.tally.ok()
        else:
            self.tally.error(f"{status} {json.loads(content).get('code', '')}".strip())


def make_clients(share):
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
            Heartbeats(tally, devices, parsed.hostname, parsed.port),
        )
        for devices, connect_at in clients
    ], tally


def run_load(calls, concurrency, server_url, seconds, processes, offset: int, meter=None) -> dict:
    """``concurrency`` clients, client k heartbeating devices k, k + C, ... (rotated by
    ``offset`` so runs start on different devices), in ``processes`` processes; they connect
    ``CONNECT_STAGGER`` s apart, then load together for ``seconds``."""
    connect_times, start_at = loadkit.schedule(concurrency, CONNECT_STAGGER)
    rotated = calls[offset:] + calls[:offset]
    clients = [(rotated[k::concurrency], connect_times[k]) for k in range(concurrency)]
    shares = [(clients[i::processes], server_url) for i in range(processes) if clients[i::processes]]
    return loadkit.run_load(make_clients, shares, seconds, start_at, meter=meter)


# --- in-process: round trips of one heartbeat ------------------------------------------------------


def count_round_trips(session: str, body: bytes) -> list[str]:
    """The statements of one heartbeat through the hot route's steps, its session and
    entitlement cached."""
    from governance.api.device_leases import HEARTBEAT
    from governance.hotpath import HotRequest, drive

    request = HotRequest("POST", HEARTBEAT_PATH, {}, {"authorization": f"Bearer {session}"}, body)
    assert drive(HEARTBEAT, request)[0] == 200  # caches the session and the entitlement
    with loadkit.captured() as captured:
        assert drive(HEARTBEAT, request)[0] == 200
    statements = [query["sql"] for query in captured.captured_queries]
    loadkit.print_statements("One heartbeat through the hot route's steps (session and entitlement cached)", statements)
    loadkit.close_connection()
    return statements


# --- py-spy: where the server's time goes -------------------------------------------------

# Functions whose inclusive share of the server's samples says what each part costs.
PARTS = [
    ("uvicorn: HTTP parsing, ASGI, responses (outside the hot path)", None),
    ("hot path: admission, body, answer (HotPath._route)", "HotPath._route"),
    ("  the steps on the event loop (drive_async)", "drive_async"),
    ("  the heartbeat's parse and rules (heartbeat)", "heartbeat"),
    ("pool threads, all (settling: parked, refused)", "_worker"),
    ("the group commit's writer thread, all", "GroupCommit._run"),
    ("  sessions not in memory, read for the batch", "WalletSessionCache.load_many"),
    ("  entitlements not in memory, read for the batch", "HoldingCache.read"),
]


# --- runs ------------------------------------------------------------------------------------------


def measure_configuration(args, calls, problems: list[str], workers: int) -> list[dict]:
    """One server: the correctness figure (its problems added to ``problems``), then the runs."""
    from django.utils import timezone

    database_url = os.environ["DATABASE_URL"]
    server = loadkit.Server(workers, "heartbeat")
    rows = []
    try:
        server.start()
        problems += revive_parked(server.url, calls, args.parked)
        meter = loadkit.CpuMeter(server, database_url)
        for run in range(1, args.repeat + 1):
            load = os.getloadavg()[0]
            offset = (run * 7919 + workers * 104729) % len(calls)
            before = lease_counts()
            warm = run_load(calls, args.concurrency, server.url, args.warmup, args.client_processes, offset)
            if warm["ok"] == 0:
                raise RuntimeError(f"warm-up failed: {warm['error_kinds']}\n{server.output()}")
            recorders = []
            if args.py_spy and run == 1:
                pids = server.pids()[1:] if workers > 1 else server.pids()[:1]
                recorders = loadkit.start_py_spy(args.py_spy, pids, args.duration, "heartbeat")
            started = timezone.now()
            result = run_load(calls, args.concurrency, server.url, args.duration, args.client_processes, offset, meter)
            result["problems"], reached = check_run(before, started)
            result.update(workers=workers, run=run, load=load, reached=reached)
            rows.append(result)
            loadkit.print_call_run(result, "heartbeats/s", "heartbeat", "heartbeats", "CHECK")
            print(f"    distinct devices heartbeated in the measured window: {reached:,} of {len(calls):,}")
            if recorders:
                loadkit.report_py_spy(recorders, PARTS)
    finally:
        server.close()
    return rows


COLUMNS = loadkit.call_columns("Heartbeats/s", "heartbeat", "Heartbeats", postgres_per_call=True)


def print_table(rows: list[dict], args) -> None:
    title = (
        f"POST {HEARTBEAT_PATH}, {args.concurrency} clients over {args.devices:,} devices of {args.owners} "
        f"organization roots, {args.duration:.0f} s per run"
    )
    loadkit.print_table(title, COLUMNS, rows)


def meets_target(row: dict) -> bool:
    return row["rps"] >= THROUGHPUT_TARGET and loadkit.run_passed(row)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    loadkit.add_server_arguments(parser, "comma list of worker counts, e.g. 1,2 (overrides --workers)")
    parser.add_argument("--owners", type=int, default=100, help="organization roots, one owner each (default 100)")
    parser.add_argument("--devices", type=int, default=10_000, help="devices, split among the owners (default 10,000)")
    parser.add_argument("--parked", type=int, default=50, help="devices parked and revived first (default 50)")
    loadkit.add_window_arguments(parser, 32, "clients")
    parser.add_argument("--client-processes", type=int, default=1, help="processes the clients are split over")
    parser.add_argument("--py-spy", metavar="PATH", help="py-spy executable: sample the workers in the first run")
    loadkit.add_run_arguments(parser, "round trips only", "the target")
    return parser.parse_args(argv)


def measure(args, calls, rows: list[dict]) -> bool:
    """The HTTP load (unless ``--no-load``), then the round trips; whether all went well."""
    problems: list[str] = []
    ok = True
    if not args.no_load:
        header = f"clients={args.concurrency}, devices={args.devices:,}, owners={args.owners}"
        loadkit.sweep(args, rows, header, partial(measure_configuration, args, calls, problems))
        print_table(rows, args)
        ok = not problems and all(loadkit.run_passed(r) for r in rows)
        goal = f"≥ {THROUGHPUT_TARGET:,.0f}/s"
        ok = loadkit.report_best(rows, args, "heartbeats/s", goal, loadkit.run_passed, meets_target) and ok
    statements = count_round_trips(*calls[-1])
    print(f"\nRound trips per heartbeat on the hot path (transaction control included): {len(statements)}")
    return ok


def main(argv=None) -> int:
    args = parse_args(argv)
    loadkit.begin_load(args, ("owners", "devices", "concurrency", "client_processes"))
    if args.parked >= args.devices:
        raise SystemExit("--parked must be fewer than --devices")
    loadkit.setup_django()
    calls = prepare_database(args.owners, args.devices)
    loadkit.close_connection()
    return loadkit.run_main(partial(measure, args, calls), partial(print_table, args=args))


if __name__ == "__main__":
    sys.exit(main())
