"""Benchmark: Sign-In with Ethereum verification (issue 14; docs/wallets.md).

Against the PostgreSQL database in ``DATABASE_URL`` (loopback only), the script prepares
``--iterations`` signed EIP-4361 messages (a fresh eth-account key and an issued nonce each,
outside the timing), then times, one call at a time:

1. ``SiweMessage.parse`` (the grammar and the EIP-55 checksum);
2. the EIP-191 signer recovery (eth-account; coincurve when installed);
3. ``verify_sign_in``: parse, checks, the nonce's read, recovery, then one transaction that
   spends the nonce and writes the session (target: p50 <= 5 ms).

Every verification must open a session (else it exits 1). The nonces and sessions written
are deleted at the end unless ``--keep``.

Usage:

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/mandate_bench SECRET_KEY=bench \\
        .venv/bin/python bench/siwe.py [--iterations 500] [--strict] [--keep]
"""

import argparse
import os
import platform
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlparse

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "governance.settings")
os.environ.setdefault("SECRET_KEY", "bench")
os.environ.setdefault("LOG_LEVEL", "WARNING")
os.environ["MANDATE_SIWE_DOMAIN"] = "bench.example"
os.environ["MANDATE_WEB3_RPC_URL"] = ""

LOOPBACK_HOSTS = {"", "127.0.0.1", "localhost", "::1", "[::1]"}
TARGET_MS = 5.0


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=500)
    parser.add_argument("--warmup", type=int, default=30)
    parser.add_argument("--strict", action="store_true", help="exit 1 when the target is missed")
    parser.add_argument("--keep", action="store_true", help="keep the nonces and sessions written")
    args = parser.parse_args()
    if args.iterations < 10:
        sys.exit("--iterations must be at least 10")

    url = urlparse(os.environ.get("DATABASE_URL", ""))
    if url.scheme not in ("postgres", "postgresql") or url.hostname not in LOOPBACK_HOSTS:
        sys.exit("DATABASE_URL must name a PostgreSQL database on loopback")

    import django

    django.setup()
    import eth_keys
    from django.core.management import call_command
    from django.utils import timezone
    from eth_account import Account
    from eth_account.messages import encode_defunct

    from governance.models import SiweNonce, WalletSession
    from governance.secret_hashing import hash_secret
    from governance.services.wallet_sessions import issue_nonce, recover_signer, verify_sign_in
    from governance.siwe import SiweMessage, format_message

    call_command("migrate", verbosity=0)
    started = timezone.now()

    def signed(count: int) -> list[tuple[str, bytes, str]]:
        prepared = []
        for _ in range(count):
            account = Account.create()
            text = format_message(
                domain="bench.example",
                address=account.address,
                statement="Sign in to Mandate.",
                uri="https://bench.example/login",
                chain_id=1,
                nonce=issue_nonce().nonce,
                issued_at=timezone.now(),
            )
            signature = bytes(account.sign_message(encode_defunct(text=text)).signature)
            prepared.append((text, signature, "0x" + signature.hex()))
        return prepared

    for text, _, signature in signed(args.warmup):
        verify_sign_in(text, signature)
    messages = signed(args.iterations)

    rows = [
        ("SiweMessage.parse", timed(messages, lambda m: SiweMessage.parse(m[0]))),
        ("recover_signer (EIP-191)", timed(messages, lambda m: recover_signer(m[0], m[1]))),
    ]
    wallets = set()
    rows.append(("verify_sign_in", timed(messages, lambda m: wallets.add(verify_sign_in(m[0], m[2]).session.wallet))))

    print(f"# SIWE verification — {platform.node()}, {os.cpu_count()} CPUs, {datetime.now(UTC):%Y-%m-%d}")
    print(f"\n{args.iterations} calls each, one at a time; ECC backend {type(eth_keys.KeyAPI().backend).__name__}\n")
    print("| call | p50 ms | p95 ms | p99 ms | target p50 |\n|---|---|---|---|---|")
    p50_verify = None
    for name, times in rows:
        p50, p95, p99 = percentile(times, 50), percentile(times, 95), percentile(times, 99)
        verdict = ""
        if name == "verify_sign_in":
            p50_verify = p50
            verdict = f"<= {TARGET_MS:.0f} ms: {'met' if p50 <= TARGET_MS else 'MISSED'}"
        print(f"| {name} | {p50:.3f} | {p95:.3f} | {p99:.3f} | {verdict} |")

    nonce_hashes = [hash_secret(SiweMessage.parse(m[0]).nonce) for m in messages]
    spent = SiweNonce.objects.filter(nonce_hash__in=nonce_hashes, used_at__isnull=False).count()
    if len(wallets) != args.iterations or spent != args.iterations:
        print(f"\nsessions for {len(wallets)} wallets, {spent} nonces spent (expected {args.iterations} each)")
        sys.exit(1)
    print(f"\nevery message opened a session and spent its nonce ({args.iterations})")
    if not args.keep:
        WalletSession.objects.filter(created_at__gte=started, domain="bench.example").delete()
        SiweNonce.objects.filter(created_at__gte=started).delete()
    if args.strict and p50_verify > TARGET_MS:
        sys.exit(1)


def timed(items, call) -> list[float]:
    times = []
    for item in items:
        start = time.perf_counter()
        call(item)
        times.append((time.perf_counter() - start) * 1000)
    return times


def percentile(times: list[float], rank: int) -> float:
    return statistics.quantiles(times, n=100, method="inclusive")[rank - 1]


if __name__ == "__main__":
    main()
