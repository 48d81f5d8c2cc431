"""``decide_policy``: the gate's Rego (``policy.rego``) over one call's facts and the policy
data (ACL, allowlist) of the current ``policy_version``.

The data and the compiled policy are one snapshot per process, rebuilt when the version's
stamp moves (``state.Loaded``); evaluating costs one bundle query (``rego.py``). The Rego is
the only statement of the rules: nothing here decides, it only builds the input and reads
the answer.
"""

from dataclasses import dataclass

from controlplane.gate.manifests import Manifest
from controlplane.gate.registry import registry
from controlplane.gate.rego import CompiledPolicy, PolicyError, compile_check, read_policy_source
from controlplane.gate.state import Loaded, Observed, observe
from controlplane.models import ApprovalAllowlistEntry, PolicyPrincipal, PolicyState
from governance.control_characters import CONTROL_CHARACTERS
from governance.errors import GateError

MAX_DENY_REASON = 500

__all__ = [
    "PolicyDecision",
    "PolicyError",
    "PolicyInput",
    "compile_check",
    "decide_policy",
    "policy_data",
    "read_policy_source",
    "sanitized_reason",
]


def sanitized_reason(text) -> str:
    """A deny reason as the wire carries it: no control characters, at most 500 characters."""
    return CONTROL_CHARACTERS.sub("", str(text or ""))[:MAX_DENY_REASON]


@dataclass(frozen=True)
class PolicyInput:
    """One call's facts. ``calls_remaining`` is the lease's budget snapshot (None: the lease
    has no call budget). The target flags come from the pipeline's pre-checks with
    ``effective_domains``/``effective_paths``/``is_sensitive_path``. ``manifest`` defaults to
    the registry's active one."""

    principal: str
    action_id: str
    scopes: tuple[str, ...] | frozenset[str] = ()
    calls_remaining: int | None = None
    sensitive_path: bool = False
    denied_paths: tuple[str, ...] = ()
    unresolved_paths: tuple[str, ...] = ()
    unresolved_domains: tuple[str, ...] = ()
    manifest: Manifest | None = None

    def document(self, manifest: Manifest | None) -> dict:
        """The Rego ``input`` (its shape: the header of policy.rego)."""
        if manifest is None:
            action = {"action_id": self.action_id, "risk_level": "critical", "side_effects": [], "required_scopes": []}
            action["trusted"] = False
        else:
            action = {
                "action_id": manifest.action_id,
                "risk_level": manifest.risk_level,
                "side_effects": list(manifest.declared_side_effects),
                "required_scopes": list(manifest.required_scopes),
                "trusted": manifest.digest_ok,
            }
        limited = self.calls_remaining is not None
        return {
            "principal": self.principal,
            "action": action,
            "scopes": sorted(set(self.scopes)),
            "budget": {"limited": limited, "exhausted": limited and self.calls_remaining <= 0},
            "target": {
                "sensitive_path": bool(self.sensitive_path),
                "denied_paths": list(self.denied_paths),
                "unresolved_paths": list(self.unresolved_paths),
                "unresolved_domains": list(self.unresolved_domains),
            },
        }


@dataclass(frozen=True)
class PolicyDecision:
    result: str  # allow | deny | hold
    deny_reason: str | None
    policy_version: int
    hold_reason: str | None = None  # risk_level_high | sensitive_path | unresolved_path | unresolved_domain
    sinks: tuple[str, ...] = ()  # the principal's allowed sinks
    allowlisted: bool = False

    @property
    def allowed(self) -> bool:
        return self.result == "allow"

    @property
    def held(self) -> bool:
        return self.result == "hold"

    @property
    def denied(self) -> bool:
        return self.result == "deny"


# --- the snapshot ---------------------------------------------------------------------------


def policy_data(version: int) -> dict:
    """``data.mandate.gate``: the ACL and the allowlist as stored now."""
    acl = {}
    for principal in PolicyPrincipal.objects.prefetch_related("grants"):
        acl[principal.name] = {
            "actions": sorted(grant.action_id for grant in principal.grants.all()),
            "sinks": list(principal.sinks),
            "inherits_wildcard": principal.inherits_wildcard,
        }
    allowlist: dict[str, dict[str, bool]] = {}
    for action_id, agent_id in ApprovalAllowlistEntry.objects.values_list("action_id", "agent_id"):
        allowlist.setdefault(action_id, {})[agent_id] = True
    return {"acl": acl, "allowlist": allowlist, "policy_version": version}


@dataclass(frozen=True)
class PolicySnapshot:
    version: int
    compiled: CompiledPolicy


def _load(observed: Observed) -> tuple[PolicySnapshot, Observed]:
    if not observed.catalogue_stamp:
        registry()  # an empty database loads the catalogue and the policy source first
        observed = observe(fresh=True)
    state = PolicyState.objects.filter(pk=1).values("policy_version", "policy_source").first() or {}
    source = state.get("policy_source") or read_policy_source()
    version = state.get("policy_version", 0)
    return PolicySnapshot(version, CompiledPolicy(source, policy_data(version))), observed


_snapshot: Loaded[PolicySnapshot] = Loaded("policy", _load)


def current_policy_version() -> int:
    return _snapshot.get().version


def forget() -> None:
    _snapshot.forget()


def decide_policy(policy_input: PolicyInput) -> PolicyDecision:
    """Allow, deny (with a sanitized ``deny_reason``) or hold, by the Rego. A policy that
    fails to evaluate is ``GateError(503, "policy_engine_unavailable")``."""
    snapshot = _snapshot.get()
    manifest = policy_input.manifest or registry().get(policy_input.action_id)
    try:
        value = snapshot.compiled.evaluate(policy_input.document(manifest))
    except PolicyError as exc:
        raise GateError(503, "policy_engine_unavailable") from exc
    result = value["result"]
    return PolicyDecision(
        result=result,
        deny_reason=sanitized_reason(value.get("deny_reason") or "denied by policy") if result == "deny" else None,
        policy_version=snapshot.version,
        hold_reason=value.get("hold_reason"),
        sinks=tuple(value.get("sinks") or ()),
        allowlisted=bool(value.get("allowlisted")),
    )
