"""Benchmark: issuing and verifying seals (issue 13; docs/seals.md).

Against the PostgreSQL database in ``DATABASE_URL`` (loopback only), the script times, one
call at a time over ``--iterations`` calls (default 500, after a warm-up):

1. ``issue_seal``: checking the values, confirming the active Ed25519 key (one query), signing,
   drawing the SVG and VERIFY.md (target: p50 <= 20 ms);
2. ``bundle_zip`` of each seal;
3. ``verify_seal`` with the database's published keys (one query for the kid): hardened parse,
   re-drawing, comparison, signature (target: p50 <= 10 ms);
4. ``verify_seal`` offline with the public key given;
5. ``verify_bundle`` on the zip (the svg verified plus the bundle's files checked).

Seals are not stored (the entitlements app stores them); the only row written is the Ed25519
signing key, created if the database has none, and kept as keys are.

Usage:

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/mandate_bench SECRET_KEY=bench \\
        .venv/bin/python bench/seal.py [--iterations 500] [--strict]
"""

import argparse
import os
import platform
import statistics
import sys
import time
from datetime import UTC, datetime

import loadkit

loadkit.in_process_env()

TARGETS_MS = {"issue_seal": 20.0, "verify_seal (published keys)": 10.0}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=500)
    parser.add_argument("--warmup", type=int, default=30)
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    args = parser.parse_args()
    if args.iterations < 10:
        sys.exit("--iterations must be at least 10")

    loadkit.scratch_database_url()

    import django

    django.setup()
    from django.core.management import call_command

    from evidence.seals import bundle_zip, issue_seal, verify_bundle, verify_seal

    call_command("migrate", verbosity=0)

    def values(index: int) -> dict:
        digest = f"{index:064x}"
        return {
            "principal": f"runner-{index % 50}@acme-research.iam.gserviceaccount.com",
            "entitlement_id": f"ent_bench_{index % 20:04d}",
            "run_id": f"run_bench_{time.time_ns()}_{index}",
            "inputs_sha256": "sha256:" + digest,
            "run_manifest_sha256": digest[::-1],
            "outputs_sha256": digest.replace("0", "f"),
            "container_image": "ghcr.io/acme/trainer@sha256:" + "ab" * 32,
            "project_id": "acme-research-prod",
        }

    for index in range(args.warmup):
        verify_seal(issue_seal(**values(index)).seal_svg)

    rows = []
    bundles = []
    rows.append(("issue_seal", timed(args.iterations, lambda i: bundles.append(issue_seal(**values(i))))))
    zips = []
    rows.append(("bundle_zip", timed(args.iterations, lambda i: zips.append(bundle_zip(bundles[i])))))
    outcomes = set()
    rows.append(
        (
            "verify_seal (published keys)",
            timed(args.iterations, lambda i: outcomes.add(verify_seal(bundles[i].seal_svg).status)),
        )
    )
    pem = bundles[0].public_key_pem
    rows.append(
        (
            "verify_seal (public key given)",
            timed(args.iterations, lambda i: outcomes.add(verify_seal(bundles[i].seal_svg, public_keys=pem).status)),
        )
    )
    bundle_check = timed(args.iterations, lambda i: outcomes.add(verify_bundle(zips[i]).status))
    rows.append(("verify_bundle (published keys)", bundle_check))

    print(f"# seals — {platform.node()}, {os.cpu_count()} CPUs, {datetime.now(UTC):%Y-%m-%d}")
    print(
        f"\n{args.iterations} calls each, one at a time; seal.svg {len(bundles[0].seal_svg.encode()):,} bytes, "
        f"bundle {len(zips[0]):,} bytes\n"
    )
    print("| call | p50 ms | p95 ms | p99 ms | target p50 |\n|---|---|---|---|---|")
    missed = []
    for name, times in rows:
        p50, p95, p99 = percentile(times, 50), percentile(times, 95), percentile(times, 99)
        target = TARGETS_MS.get(name)
        verdict = ""
        if target is not None:
            verdict = f"<= {target:.0f} ms: {'met' if p50 <= target else 'MISSED'}"
            if p50 > target:
                missed.append(name)
        print(f"| {name} | {p50:.2f} | {p95:.2f} | {p99:.2f} | {verdict} |")
    if outcomes != {"VERIFIED"}:
        print(f"\nverification outcomes: {sorted(outcomes)} (expected only VERIFIED)")
        sys.exit(1)
    print("\nevery seal and bundle verified")
    if missed and args.strict:
        sys.exit(1)


def timed(iterations: int, call) -> list[float]:
    times = []
    for index in range(iterations):
        start = time.perf_counter()
        call(index)
        times.append((time.perf_counter() - start) * 1000)
    return times


def percentile(times: list[float], rank: int) -> float:
    return statistics.quantiles(times, n=100, method="inclusive")[rank - 1] if rank < 100 else max(times)


if __name__ == "__main__":
    main()
