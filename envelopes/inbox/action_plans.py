"""A held action's stored plan, readably: what will run (the action, its provider, the targets
it reaches), within which limits (egress, secrets by name, resources, sizes, the verifier),
and what an operator may learn while approving it (the domain or path it was held for).

Read from ``GateApproval.plan`` (the gate's ``ExecutionPlan.to_dict()``, docs/gate.md) and
its request body. Only shown: approving executes the stored plan itself, never this view.
Targets are the template's URL filled with the body's fields (``{{var}}``), or the path a
``builtin:fs`` body names; whether each is on the plan's allowlist is said so that the
operator sees why a call was held and what "learn" would add.
"""

import json
import re
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from urllib.parse import urlsplit

from envelopes.inbox.documents import tree
from envelopes.models import GateApproval

BUILTIN_HTTP, BUILTIN_FS = "builtin:http_api", "builtin:fs"
PLACEHOLDER = re.compile(r"\{\{\s*([^{}]+?)\s*\}\}")
PROVIDERS = {BUILTIN_HTTP: "Built-in HTTP provider", BUILTIN_FS: "Built-in file provider"}


@dataclass(frozen=True)
class Target:
    kind: str  # "url" or "path"
    value: str
    host: str = ""  # a URL's domain
    known: bool = True  # on the plan's allowlist (its allowed and learned domains or paths)
    detail: str = ""  # "DELETE", "operation write"


@dataclass
class PlanView:
    action_id: str
    version: str
    digest: str
    provider: str  # the digest in words
    targets: list[Target] = field(default_factory=list)
    method: str = ""
    url_template: str = ""
    headers: list[tuple[str, str]] = field(default_factory=list)  # values as templated: secrets by name
    body_template: dict | None = None  # a tree
    egress_profile: str = "none"
    allowed_domains: list[str] = field(default_factory=list)
    allowed_methods: list[str] = field(default_factory=list)
    fs_operations: list[str] = field(default_factory=list)
    allowed_paths: list[str] = field(default_factory=list)
    denied_paths: list[str] = field(default_factory=list)
    secrets: list[tuple[str, bool]] = field(default_factory=list)  # (name, required)
    limits: list[tuple[str, str]] = field(default_factory=list)
    verifier: str = "none"
    verifier_config: dict | None = None  # a tree
    side_effects: list[str] = field(default_factory=list)
    learn_domain: str = ""  # the first target domain not on the allowlist
    learn_path: str = ""  # the first target path not among the allowed paths
    offers_domain: bool = False  # http: learning a domain makes sense
    offers_path: bool = False  # fs: learning a path makes sense

    @property
    def target_text(self) -> str:
        """The targets in a few words, for a card."""
        return ", ".join(target.value for target in self.targets)


def _mapping(value) -> dict:
    return value if isinstance(value, dict) else {}


def _strings(value) -> list[str]:
    return [str(item) for item in value] if isinstance(value, list) else []


def _fill(template: str, body: dict) -> str:
    """The template with the body's top-level fields in its ``{{var}}`` placeholders (left as
    they are when the body lacks one)."""

    def value(match):
        name = match.group(1)
        found = body.get(name)
        if name not in body or isinstance(found, dict | list) or found is None:
            return match.group(0)
        return ("true" if found else "false") if isinstance(found, bool) else str(found)

    return PLACEHOLDER.sub(value, template)


def domain_allowed(host: str, allowed: list[str]) -> bool:
    """``host`` is one of the domains, or under a ``*.`` wildcard among them."""
    host = host.lower().rstrip(".")
    for domain in allowed:
        domain = domain.lower().rstrip(".")
        if host == domain or (domain.startswith("*.") and host.endswith(domain[1:])):
            return True
    return False


def path_matches(path: str, patterns: list[str]) -> bool:
    """``path`` matches one of the globs (``dir/**``: anything under ``dir``)."""
    return any(
        fnmatchcase(path, pattern) or (pattern.endswith("/**") and path.startswith(pattern[:-2]))
        for pattern in patterns
    )


def _limits(plan: dict) -> list[tuple[str, str]]:
    resources, io, fs = _mapping(plan.get("resource_limits")), _mapping(plan.get("io")), _mapping(plan.get("fs"))
    rows = [
        ("Fuel", resources.get("fuel")),
        ("Memory", f"{resources['memory_mb']} MB" if "memory_mb" in resources else None),
        ("Timeout", f"{resources['timeout_seconds']} s" if "timeout_seconds" in resources else None),
        ("I/O calls", resources.get("max_io_calls")),
        ("Request size", _bytes(io.get("max_request_bytes"))),
        ("Response size", _bytes(io.get("max_response_bytes"))),
        ("File size", _bytes(fs.get("max_file_bytes")) if plan.get("provider_module_digest") == BUILTIN_FS else None),
    ]
    return [(label, f"{value:,}" if isinstance(value, int) else str(value)) for label, value in rows if value]


def _bytes(value) -> str | None:
    if not isinstance(value, int) or isinstance(value, bool):
        return None
    for unit, size in (("MiB", 1024 * 1024), ("KiB", 1024)):
        if value >= size and value % size == 0:
            return f"{value // size:,} {unit}"
    return f"{value:,} bytes"


def _provider(digest: str) -> str:
    if digest in PROVIDERS:
        return PROVIDERS[digest]
    return "WebAssembly module" if digest.startswith("sha256:") else "Unknown provider"


def plan_view(approval: GateApproval) -> PlanView:
    """The stored plan of a held action, readably."""
    plan = _mapping(approval.plan)
    body = _mapping(approval.request_body)
    digest = str(plan.get("provider_module_digest") or "")
    egress, fs = _mapping(plan.get("egress")), _mapping(plan.get("fs"))
    template = _mapping(plan.get("template"))
    view = PlanView(
        action_id=str(plan.get("action_id") or approval.action_id),
        version=str(plan.get("version") or approval.action_version),
        digest=digest,
        provider=_provider(digest),
        egress_profile=str(egress.get("profile") or "none"),
        allowed_domains=_strings(egress.get("allowed_domains")),
        allowed_methods=_strings(egress.get("allowed_methods")),
        fs_operations=_strings(fs.get("allowed_operations")),
        allowed_paths=_strings(fs.get("allowed_paths")),
        denied_paths=_strings(fs.get("denied_paths")),
        secrets=[
            (str(s.get("name")), bool(s.get("required", True))) if isinstance(s, dict) else (str(s), True)
            for s in plan.get("secrets") or []
            if isinstance(s, dict | str)
        ],
        limits=_limits(plan),
        verifier=str(plan.get("verifier_kind") or "none"),
        side_effects=_strings(plan.get("declared_side_effects")),
    )
    if plan.get("verification_config") not in (None, {}, []):
        view.verifier_config = tree(plan["verification_config"])
    if template:
        view.method = str(template.get("method") or "").upper()
        view.url_template = str(template.get("url_template") or "")
        view.headers = [(str(k), str(v)) for k, v in _mapping(template.get("headers")).items()]
        if template.get("body_template") is not None:
            view.body_template = tree(template["body_template"])
        url = _fill(view.url_template, body)
        host = urlsplit(url).hostname or ""
        known = domain_allowed(host, view.allowed_domains) if host else True
        view.targets.append(Target("url", url, host, known, view.method))
        view.offers_domain = True
        view.learn_domain = "" if known else host
    if digest == BUILTIN_FS:
        view.offers_path = True
        path = body.get("path")
        if isinstance(path, str) and path:
            denied = path_matches(path, view.denied_paths)  # denied paths always win: nothing to learn
            known = path_matches(path, view.allowed_paths) and not denied
            operation = body.get("operation")
            detail = f"operation {operation}" if isinstance(operation, str) else ""
            view.targets.append(Target("path", path, known=known, detail=detail))
            view.learn_path = "" if known or denied else path
    return view


def raw_json(value) -> str:
    """A stored JSON value as the page shows it raw."""
    return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=True)
