"""Step 7: where the call would reach, before anything runs. The plan is built from the
manifest with the effective domains and paths (declared + learned); the http target's host
and the fs path are checked against them. What is not known is *unresolved* (the policy holds
it for a person, who may learn it); a denied or sensitive path is flagged for the policy."""

from urllib.parse import urlsplit

from controlplane.gate.learned import effective_domains, effective_paths
from controlplane.gate.targets import is_sensitive_path
from envelopes.gate.plan import BUILTIN_FS, BUILTIN_HTTP, ExecutionPlan
from envelopes.gate.providers import http_api
from envelopes.gate.steps.call import Call
from governance.errors import GateError


def resolve_targets(call: Call) -> None:
    manifest, body = call.manifest, call.body
    domains = effective_domains(call.action_id, manifest)
    paths = effective_paths(call.action_id, manifest)
    call.plan, call.plan_hash = plan_for(manifest, domains.domains, paths.allowed + paths.learned)
    digest = manifest.provider_module_digest
    if digest == BUILTIN_HTTP:
        try:
            host = urlsplit(http_api.target_url(call.plan, body)).hostname or ""
        except Exception as exc:  # noqa: BLE001 (a template the body cannot fill)
            raise GateError(422, "schema_violation", reason=f"the request cannot fill the action's URL: {exc}") from exc
        call.domains = (host,)
        if not domains.allows(host):
            call.unresolved_domains = (host,)
    elif digest == BUILTIN_FS:
        path = str(body.get("path", "."))
        call.paths = (path,)
        verdict = paths.classify(path)
        if verdict == "denied":
            call.denied_paths = (path,)
        elif verdict == "unresolved":
            call.unresolved_paths = (path,)
        call.sensitive_path = is_sensitive_path(path)


_plans: dict = {}
MAX_PLANS = 1024


def plan_for(manifest, domains: tuple, paths: tuple) -> tuple[ExecutionPlan, str]:
    """The execution plan of ``manifest`` (its validated document) with the effective domains
    and paths, and its hash; built once per (manifest, domains, paths) — plans are frozen."""
    key = (manifest.document_hash, domains, paths)
    found = _plans.get(key)
    if found is None:
        if len(_plans) >= MAX_PLANS:
            _plans.clear()
        plan = ExecutionPlan.from_manifest(manifest.document, allowed_domains=domains, allowed_paths=paths)
        found = _plans[key] = (plan, plan.plan_hash())
    return found
