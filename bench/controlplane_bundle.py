"""Benchmark: plan and apply a generated control-plane bundle (issue 3, "Performance").

Generates a deterministic multi-document YAML bundle in memory (by default 10,000 documents:
100 business services, 1,000 processes, 3,000 surfaces, 1,000 agents, 3,000 profiles and
1,900 grants), then measures on a fresh organization:

- plan (``plan_bundle``), 3 runs, best and median, against the target of 5 s;
- apply (``apply_bundle``) once on the empty organization, against the target of 15 s;
- re-apply of the identical bundle (every result must be ``unchanged``);

and counts the SQL queries of each step. With ``--scaling`` it repeats plan and apply for
bundles of 1,000 / 5,000 / N documents and prints queries in total and per document, which
shows that the query count does not grow with the bundle (no per-document queries).

Usage (PostgreSQL on loopback; a scratch database the script may write to):

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/h_bench SECRET_KEY=bench \\
        .venv/bin/python bench/controlplane_bundle.py [--documents 10000] [--scaling] [--profile]

Exit status: 0 when every correctness check passes (and, with ``--strict``, every target is
met), 1 otherwise. The whole run is bounded by ``--time-limit`` seconds (SIGALRM).
"""

import argparse
import cProfile
import datetime
import io
import os
import platform
import pstats
import signal
import statistics
import sys
import time
import uuid
from collections import Counter
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlparse

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "governance.settings")

PLAN_TARGET_S = 5.0
APPLY_TARGET_S = 15.0
LOOPBACK_HOSTS = {"", "127.0.0.1", "localhost", "::1", "[::1]"}

# Share of each kind in a bundle (per 100 documents), as the issue specifies for 10,000.
MIX = (
    ("BusinessService", 1),
    ("Process", 10),
    ("Surface", 30),
    ("Agent", 10),
    ("Profile", 30),
    ("Grant", 19),
)


# --- bundle generation ------------------------------------------------------------------


def composition(documents: int) -> dict[str, int]:
    """How many documents of each kind a bundle of ``documents`` holds (grants take the remainder)."""
    if documents < 100:
        raise SystemExit("--documents must be at least 100")
    counts = {kind: documents * share // 100 for kind, share in MIX}
    counts["Grant"] += documents - sum(counts.values())
    return counts


BUSINESS_SERVICE = """apiVersion: midas.accept.io/v1
kind: BusinessService
metadata:
  id: bs-{i:05d}
  name: Business service {i}
spec:
  description: Generated business service {i}
  service_type: {service_type}
  regulatory_scope: PSD2
  status: active
  owner_id: team-{team}
"""

PROCESS = """apiVersion: midas.accept.io/v1
kind: Process
metadata:
  id: proc-{i:05d}
  name: Process {i}
spec:
  business_service_id: bs-{bs:05d}
  description: Generated process {i}
  status: active
  owner: team-{team}
"""

SURFACE = """apiVersion: midas.accept.io/v1
kind: Surface
metadata:
  id: surf-{i:05d}
  name: Decision surface {i}
  labels:
    team: team-{team}
spec:
  description: Generated decision surface {i}
  domain: domain-{domain}
  category: financial
  risk_tier: {risk_tier}
  process_id: proc-{process:05d}
  business_owner: owner-{owner}
  technical_owner: platform-team-{team}
  minimum_confidence: 0.7
  failure_mode: closed
  required_context:
    fields:
      - name: account_id
        type: string
        required: true
        description: Source account identifier
      - name: destination_country
        type: string
        required: true
        description: ISO 3166 country of the beneficiary bank
  consequence_types:
    - monetary
  tags: [generated, bench]
"""

AGENT = """apiVersion: midas.accept.io/v1
kind: Agent
metadata:
  id: agent-{i:05d}
  name: Agent {i}
spec:
  type: {agent_type}
  owner: owner-{owner}
  runtime:
    model: model-{model}
    version: "1.{model}.0"
  endpoint: https://agent-{i:05d}.internal.example/run
  status: active
"""

PROFILE_MONETARY = """apiVersion: midas.accept.io/v1
kind: Profile
metadata:
  id: prof-{i:05d}
  name: Authority profile {i}
spec:
  surface_id: surf-{surface:05d}
  description: Generated monetary authority profile {i}
  authority:
    decision_confidence_threshold: 0.85
    consequence_threshold:
      type: monetary
      amount: {amount}
      currency: GBP
  input_requirements:
    required_context:
      - account_id
  policy:
    reference: payments.release
    fail_mode: closed
  lifecycle:
    status: active
    effective_from: "2026-01-01T00:00:00Z"
"""

PROFILE_RISK = """apiVersion: midas.accept.io/v1
kind: Profile
metadata:
  id: prof-{i:05d}
  name: Authority profile {i}
spec:
  surface_id: surf-{surface:05d}
  description: Generated risk-rated authority profile {i}
  authority:
    decision_confidence_threshold: 0.9
    consequence_threshold:
      type: risk_rating
      risk_rating: {rating}
  policy:
    fail_mode: closed
  lifecycle:
    effective_from: "2026-01-01T00:00:00Z"
"""

GRANT = """apiVersion: midas.accept.io/v1
kind: Grant
metadata:
  id: grant-{i:05d}
spec:
  agent_id: agent-{agent:05d}
  profile_id: prof-{profile:05d}
  granted_by: owner-{owner}
  grant_reason: Generated grant {i}
  effective_from: "2026-01-01T00:00:00Z"
  status: active
"""


def generate_bundle(documents: int) -> tuple[str, dict[str, int]]:
    """A valid bundle in dependency order with deterministic ids; references spread evenly."""
    n = composition(documents)
    parts: list[str] = []
    for i in range(n["BusinessService"]):
        service_type = ("customer_facing", "internal", "technical")[i % 3]
        parts.append(BUSINESS_SERVICE.format(i=i, service_type=service_type, team=i % 20))
    for i in range(n["Process"]):
        parts.append(PROCESS.format(i=i, bs=i % n["BusinessService"], team=i % 20))
    for i in range(n["Surface"]):
        parts.append(
            SURFACE.format(
                i=i,
                team=i % 20,
                domain=i % 10,
                risk_tier=("low", "medium", "high")[i % 3],
                process=i % n["Process"],
                owner=i % 50,
            )
        )
    for i in range(n["Agent"]):
        agent_type = ("llm_agent", "automation", "copilot", "workflow", "operator")[i % 5]
        parts.append(AGENT.format(i=i, agent_type=agent_type, owner=i % 50, model=i % 4))
    for i in range(n["Profile"]):
        surface = i % n["Surface"]
        if i % 2 == 0:
            parts.append(PROFILE_MONETARY.format(i=i, surface=surface, amount=1000 * (1 + i % 50)))
        else:
            rating = ("low", "medium", "high", "critical")[i % 4]
            parts.append(PROFILE_RISK.format(i=i, surface=surface, rating=rating))
    for i in range(n["Grant"]):
        parts.append(GRANT.format(i=i, agent=i % n["Agent"], profile=i % n["Profile"], owner=i % 50))
    return "---\n".join(parts), n


# --- measurement helpers ----------------------------------------------------------------


class QueryCounter:
    """``connection.execute_wrapper`` hook: counts statements (executemany counts once)."""

    def __init__(self):
        self.count = 0

    def __call__(self, execute, sql, params, many, context):
        self.count += 1
        return execute(sql, params, many, context)


@contextmanager
def measured():
    """Yield a dict that receives ``seconds`` and ``queries`` for the enclosed block."""
    from django.db import connection

    counter, result = QueryCounter(), {}
    with connection.execute_wrapper(counter):
        start = time.perf_counter()
        try:
            yield result
        finally:
            result["seconds"] = time.perf_counter() - start
            result["queries"] = counter.count


def new_organization(label: str):
    from governance.services.people import ensure_organization

    slug = f"bench-{label}-{datetime.datetime.now(datetime.UTC):%Y%m%d%H%M%S}-{uuid.uuid4().hex[:6]}"
    return ensure_organization(slug, f"Bench {label}")


def remove_organization(organization) -> None:
    """Delete what the run wrote, children first (control-plane foreign keys are PROTECT)."""
    from django.db import transaction

    from controlplane.models import (
        Agent,
        BusinessService,
        BusinessServiceCapability,
        Capability,
        Grant,
        Policy,
        Process,
        Profile,
        Surface,
    )
    from evidence.models import ControlPlaneAuditRecord

    with transaction.atomic():
        for model in (Grant, Profile, Agent, Surface, BusinessServiceCapability, Policy):
            model.objects.filter(organization=organization).delete()
        for model in (Process, Capability):
            model.objects.filter(organization=organization).update(parent=None)
            model.objects.filter(organization=organization).delete()
        BusinessService.objects.filter(organization=organization).delete()
        ControlPlaneAuditRecord.objects.filter(organization_id=organization.pk).delete()
    organization.delete()


def persisted_counts(organization) -> dict[str, int]:
    from controlplane.models import Agent, BusinessService, Grant, Process, Profile, Surface

    models = {
        "BusinessService": BusinessService,
        "Process": Process,
        "Surface": Surface,
        "Agent": Agent,
        "Profile": Profile,
        "Grant": Grant,
    }
    return {kind: model.objects.filter(organization=organization).count() for kind, model in models.items()}


def statuses(result) -> Counter:
    return Counter(item["status"] for item in result.results)


def profiled(label: str, function, *args, top: int = 25):
    profiler = cProfile.Profile()
    profiler.enable()
    try:
        return function(*args)
    finally:
        profiler.disable()
        out = io.StringIO()
        stats = pstats.Stats(profiler, stream=out).strip_dirs().sort_stats("cumulative")
        stats.print_stats(top)
        print(f"\n#### cProfile: {label} (top {top} by cumulative time)\n\n```")
        print(out.getvalue().strip())
        print("```")


# --- machine information ----------------------------------------------------------------


def machine_info() -> dict[str, str]:
    from django import get_version
    from django.db import connection

    cpu_model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = "unknown"
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
                break
    except (OSError, ValueError):
        pass
    with connection.cursor() as cursor:
        cursor.execute("SHOW server_version")
        server_version = cursor.fetchone()[0]
    try:
        load = " ".join(f"{value:.2f}" for value in os.getloadavg())
    except OSError:
        load = "unknown"
    return {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "nproc": str(os.cpu_count()),
        "cpu": cpu_model,
        "memory": memory,
        "load average (1/5/15 min, at start)": load,
        "python": platform.python_version(),
        "django": get_version(),
        "database": f"PostgreSQL {server_version}" if connection.vendor == "postgresql" else connection.vendor,
    }


def check_loopback() -> None:
    url = os.environ.get("DATABASE_URL", "")
    if not url:
        raise SystemExit("DATABASE_URL is not set; this benchmark targets PostgreSQL on loopback")
    parsed = urlparse(url)
    if not parsed.scheme.startswith("postgres"):
        raise SystemExit("DATABASE_URL must be a postgres:// URL")
    if (parsed.hostname or "") not in LOOPBACK_HOSTS:
        raise SystemExit(f"refusing to run against non-loopback database host {parsed.hostname!r}")


# --- the benchmark ----------------------------------------------------------------------


class Failure(Exception):
    pass


def expect(condition: bool, message: str) -> None:
    if not condition:
        raise Failure(message)


def main_benchmark(args, bundle: str, counts: dict[str, int]) -> dict:
    from controlplane.services.bundles import apply_bundle, plan_bundle
    from controlplane.services.documents import parse_bundle

    documents = sum(counts.values())
    body = bundle.encode("utf-8")
    organization = new_organization("main")
    try:
        with measured() as parse:
            docs = parse_bundle(body)
        expect(len(docs) == documents, f"parsed {len(docs)} documents, expected {documents}")
        del docs

        plans = []
        for _ in range(args.plan_runs):
            with measured() as run:
                plan = plan_bundle(organization, body)
            plans.append(run)
        expect(plan.invalid_count == 0, f"plan: {plan.invalid_count} invalid entries: {plan.validation_errors[:3]}")
        expect(plan.create_count == documents, f"plan: create_count {plan.create_count}, expected {documents}")
        expect(plan.would_apply, "plan: would_apply is false")
        del plan

        with measured() as apply:
            result = apply_bundle(organization, body, "system:bench")
        created = statuses(result)
        expect(result.written, "apply: nothing was written")
        expect(not result.plan.validation_errors, f"apply: validation errors {result.plan.validation_errors[:3]}")
        expect(created == Counter({"created": documents}), f"apply: statuses {dict(created)}")
        stored = persisted_counts(organization)
        expect(stored == counts, f"apply: persisted {stored}, expected {counts}")
        del result

        with measured() as replan:
            plan = plan_bundle(organization, body)
        expect(plan.create_count == 0 and plan.invalid_count == 0, "re-plan: expected every entry unchanged")
        del plan

        with measured() as reapply:
            result = apply_bundle(organization, body, "system:bench")
        unchanged = statuses(result)
        expect(unchanged == Counter({"unchanged": documents}), f"re-apply: statuses {dict(unchanged)}")
        expect(persisted_counts(organization) == counts, "re-apply: persisted rows changed")
        del result
    finally:
        if not args.keep:
            remove_organization(organization)

    plan_times = [run["seconds"] for run in plans]
    return {
        "documents": documents,
        "parse": parse,
        "plan_best": min(plan_times),
        "plan_median": statistics.median(plan_times),
        "plan_times": plan_times,
        "plan_queries": plans[0]["queries"],
        "apply": apply,
        "replan": replan,
        "reapply": reapply,
    }


def scaling_benchmark(args, sizes: list[int]) -> list[dict]:
    from controlplane.services.bundles import apply_bundle, plan_bundle

    rows = []
    for size in sizes:
        bundle, counts = generate_bundle(size)
        body = bundle.encode("utf-8")
        organization = new_organization(f"scale{size}")
        try:
            with measured() as plan_run:
                plan = plan_bundle(organization, body)
            expect(plan.create_count == size and plan.invalid_count == 0, f"scaling {size}: plan not all create")
            del plan
            with measured() as apply_run:
                result = apply_bundle(organization, body, "system:bench")
            expect(statuses(result) == Counter({"created": size}), f"scaling {size}: apply not all created")
            del result
            with measured() as reapply_run:
                result = apply_bundle(organization, body, "system:bench")
            expect(statuses(result) == Counter({"unchanged": size}), f"scaling {size}: re-apply not all unchanged")
            del result
        finally:
            if not args.keep:
                remove_organization(organization)
        rows.append({"documents": size, "plan": plan_run, "apply": apply_run, "reapply": reapply_run})
        print(f"  scaling: {size:,} documents done", file=sys.stderr, flush=True)
    return rows


def profile_run(args, bundle: str) -> None:
    from controlplane.services.bundles import apply_bundle, plan_bundle

    body = bundle.encode("utf-8")
    organization = new_organization("profile")
    try:
        profiled("plan_bundle", plan_bundle, organization, body)
        profiled("apply_bundle", apply_bundle, organization, body, "system:bench")
    finally:
        if not args.keep:
            remove_organization(organization)


def verdict(seconds: float, target: float) -> str:
    return f"≤ {target:g} s: **{'met' if seconds <= target else 'MISSED'}**"


def report(info: dict, main: dict, generation: dict, bundle_bytes: int, counts: dict, scaling: list[dict]) -> None:
    documents = main["documents"]
    mix = ", ".join(f"{count:,} {kind}" for kind, count in counts.items())
    print(f"\n### Control-plane bundle benchmark: {documents:,} documents ({mix}); {bundle_bytes / 1e6:.1f} MB YAML\n")
    print("| Step | Time | Queries | Queries / document | Target |")
    print("|---|---:|---:|---:|---|")

    def row(step, seconds, queries=None, target=""):
        per_doc = f"{queries / documents:.4f}" if queries is not None else "–"
        queries = f"{queries:,}" if queries is not None else "–"
        print(f"| {step} | {seconds:.2f} s | {queries} | {per_doc} | {target} |")

    row("generate YAML (in memory, not part of plan/apply)", generation["seconds"])
    row("parse + validate only (`parse_bundle`)", main["parse"]["seconds"], main["parse"]["queries"])
    runs = ", ".join(f"{t:.2f}" for t in main["plan_times"])
    row(f"plan, empty organization, best of {len(main['plan_times'])}", main["plan_best"], main["plan_queries"])
    row(
        f"plan, empty organization, median ({runs} s)",
        main["plan_median"],
        main["plan_queries"],
        verdict(main["plan_median"], PLAN_TARGET_S),
    )
    apply, reapply = main["apply"], main["reapply"]
    row(
        "apply, empty organization (all `created`)",
        apply["seconds"],
        apply["queries"],
        verdict(apply["seconds"], APPLY_TARGET_S),
    )
    row("plan, after apply (all `unchanged`)", main["replan"]["seconds"], main["replan"]["queries"])
    row(
        "re-apply identical bundle (all `unchanged`)",
        reapply["seconds"],
        reapply["queries"],
        verdict(reapply["seconds"], APPLY_TARGET_S),
    )

    if scaling:
        print("\n#### Queries as the bundle grows (fresh organization per size)\n")
        print(
            "| Documents | Plan queries | per doc | Apply queries | per doc | Re-apply queries | per doc "
            "| Plan time | Apply time | Apply ms / doc |"
        )
        print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for r in scaling:
            n = r["documents"]
            print(
                f"| {n:,} | {r['plan']['queries']} | {r['plan']['queries'] / n:.4f} "
                f"| {r['apply']['queries']} | {r['apply']['queries'] / n:.4f} "
                f"| {r['reapply']['queries']} | {r['reapply']['queries'] / n:.4f} "
                f"| {r['plan']['seconds']:.2f} s | {r['apply']['seconds']:.2f} s "
                f"| {1000 * r['apply']['seconds'] / n:.3f} |"
            )

    print("\n#### Machine\n")
    for key, value in info.items():
        print(f"- {key}: {value}")
    print(
        "\nCorrectness checks passed: plan all `create`, apply "
        f"{documents:,} `created` with 0 validation errors and the expected rows, re-apply all `unchanged`."
    )


def _time_limit_reached(signum, frame):
    raise TimeoutError("benchmark time limit reached")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--documents", type=int, default=10_000, help="bundle size (default 10000)")
    parser.add_argument("--scaling", action="store_true", help="also count queries for 1,000 / 5,000 / N documents")
    parser.add_argument("--plan-runs", type=int, default=3, help="timed plan runs (default 3)")
    parser.add_argument("--profile", action="store_true", help="print cProfile hot spots of one plan and one apply")
    parser.add_argument("--keep", action="store_true", help="keep the benchmark organizations (default: delete)")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a time target is missed")
    parser.add_argument("--time-limit", type=int, default=1800, help="abort after this many seconds (default 1800)")
    args = parser.parse_args()
    if args.plan_runs < 1:
        parser.error("--plan-runs must be at least 1")

    check_loopback()
    signal.signal(signal.SIGALRM, _time_limit_reached)
    signal.alarm(args.time_limit)

    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection

    call_command("migrate", verbosity=0, interactive=False)
    with connection.cursor() as cursor:  # a runaway statement cannot outlive the run
        cursor.execute(f"SET statement_timeout = {int(args.time_limit) * 1000}")
    info = machine_info()

    start = time.perf_counter()
    bundle, counts = generate_bundle(args.documents)
    generation = {"seconds": time.perf_counter() - start}
    print(f"generated {sum(counts.values()):,} documents ({len(bundle) / 1e6:.1f} MB)", file=sys.stderr, flush=True)

    try:
        main_result = main_benchmark(args, bundle, counts)
        scaling = []
        if args.scaling:
            sizes = sorted({size for size in (1_000, 5_000, args.documents) if size <= args.documents})
            scaling = scaling_benchmark(args, sizes)
    except Failure as exc:
        print(f"CORRECTNESS FAILURE: {exc}", file=sys.stderr)
        return 1
    report(info, main_result, generation, len(bundle.encode("utf-8")), counts, scaling)
    if args.profile:
        profile_run(args, bundle)
    signal.alarm(0)

    missed = main_result["plan_median"] > PLAN_TARGET_S or main_result["apply"]["seconds"] > APPLY_TARGET_S
    if missed:
        print("\nA time target was missed (see the table).", file=sys.stderr)
    return 1 if (missed and args.strict) else 0


if __name__ == "__main__":
    sys.exit(main())
