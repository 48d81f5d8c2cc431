"""An in-memory snapshot of one organization's declared authority, for evaluation.

Loading it takes one query per kind; it is reused until the organization's control-plane
revision moves (``controlplane.services.revision``), which every change bumps in its own
transaction. On Postgres evaluation does not even read the revision first: the statement
that records the evaluation checks it and refuses a stale snapshot (``cached_snapshot``).
Effective windows are checked per request, against the request's clock, so
a cached snapshot never serves an expired version.
"""

import threading
from dataclasses import dataclass, field
from datetime import datetime

from controlplane.models import (
    Agent,
    BusinessServiceCapability,
    Grant,
    Policy,
    Process,
    Profile,
    Surface,
)
from controlplane.services.revision import current_revision


def _covers(start: datetime | None, until: datetime | None, now: datetime) -> bool:
    return (start is None or start <= now) and (until is None or until > now)


@dataclass(frozen=True)
class SurfaceVersion:
    key: str
    version: int
    status: str
    effective_from: datetime | None
    effective_until: datetime | None
    process_key: str
    required_fields: tuple[str, ...]
    risk_tier: str
    name: str
    minimum_confidence: float | None

    def active_at(self, now: datetime) -> bool:
        return self.status == "active" and _covers(self.effective_from, self.effective_until, now)


@dataclass(frozen=True)
class ProfileVersion:
    key: str
    version: int
    status: str
    surface_key: str
    effective_date: datetime | None
    effective_until: datetime | None
    confidence_threshold: float
    consequence_threshold: dict | None
    policy_reference: str
    fail_mode: str
    escalation_mode: str
    required_context_keys: tuple[str, ...]

    def active_at(self, now: datetime) -> bool:
        return self.status == "active" and _covers(self.effective_date, self.effective_until, now)


@dataclass(frozen=True)
class GrantInfo:
    key: str
    profile_key: str
    status: str
    effective_from: datetime | None
    effective_until: datetime | None

    def active_at(self, now: datetime) -> bool:
        return self.status == "active" and _covers(self.effective_from, self.effective_until, now)


@dataclass(frozen=True)
class AgentInfo:
    key: str
    name: str
    type: str
    owner: str
    model_version: str
    operational_state: str


@dataclass(frozen=True)
class PolicyInfo:
    key: str
    package: str
    version: str
    source: str


@dataclass
class AuthoritySnapshot:
    revision: int
    surfaces: dict[str, list[SurfaceVersion]] = field(default_factory=dict)  # newest version first
    profiles: dict[str, list[ProfileVersion]] = field(default_factory=dict)
    agents: dict[str, AgentInfo] = field(default_factory=dict)
    grants_by_agent: dict[str, list[GrantInfo]] = field(default_factory=dict)
    processes: dict[str, dict] = field(default_factory=dict)
    capabilities_by_service: dict[str, list[dict]] = field(default_factory=dict)
    policies: dict[str, PolicyInfo] = field(default_factory=dict)  # by key and by package

    def active_surface(self, key: str, now: datetime) -> SurfaceVersion | None:
        return next((v for v in self.surfaces.get(key, ()) if v.active_at(now)), None)

    def active_profile(self, key: str, now: datetime) -> ProfileVersion | None:
        return next((v for v in self.profiles.get(key, ()) if v.active_at(now)), None)

    def structure(self, process_key: str) -> dict:
        process = self.processes.get(process_key)
        if process is None:
            return {"process": None, "business_service": None, "capabilities": []}
        service = process["business_service"]
        return {
            "process": {"id": process["id"], "name": process["name"], "status": process["status"]},
            "business_service": service,
            "capabilities": self.capabilities_by_service.get(service["id"], []) if service else [],
        }

    def policy(self, reference: str) -> PolicyInfo | None:
        """A profile's ``policy.reference``: a Policy id, its package, ``data.<package>`` or
        MIDAS-style ``rego://path/to/package``."""
        reference = reference.strip()
        candidates = [reference]
        if reference.startswith("rego://"):
            candidates.append(reference.removeprefix("rego://").strip("/").replace("/", "."))
        if reference.startswith("data."):
            candidates.append(reference.removeprefix("data."))
        return next((self.policies[c] for c in candidates if c in self.policies), None)


def load_snapshot(organization_id, revision: int) -> AuthoritySnapshot:
    snapshot = AuthoritySnapshot(revision=revision)
    scope = {"organization_id": organization_id}
    for s in Surface.objects.filter(**scope).select_related("process").order_by("key", "-version"):
        snapshot.surfaces.setdefault(s.key, []).append(
            SurfaceVersion(
                s.key,
                s.version,
                s.status,
                s.effective_from,
                s.effective_until,
                s.process.key,
                tuple(s.required_field_names),
                s.risk_tier,
                s.name,
                s.minimum_confidence,
            )
        )
    for p in Profile.objects.filter(**scope).order_by("key", "-version"):
        snapshot.profiles.setdefault(p.key, []).append(
            ProfileVersion(
                p.key,
                p.version,
                p.status,
                p.surface_key,
                p.effective_date,
                p.effective_until,
                p.confidence_threshold,
                p.consequence_threshold,
                p.policy_reference,
                p.fail_mode,
                p.escalation_mode,
                tuple(p.required_context_keys),
            )
        )
    for a in Agent.objects.filter(**scope):
        snapshot.agents[a.key] = AgentInfo(a.key, a.name, a.type, a.owner, a.model_version, a.operational_state)
    for g in Grant.objects.filter(**scope).select_related("agent").order_by("key"):
        snapshot.grants_by_agent.setdefault(g.agent.key, []).append(
            GrantInfo(g.key, g.profile_key, g.status, g.effective_from, g.effective_until)
        )
    for p in Process.objects.filter(**scope).select_related("business_service"):
        service = p.business_service
        snapshot.processes[p.key] = {
            "id": p.key,
            "name": p.name,
            "status": p.status,
            "business_service": {"id": service.key, "name": service.name, "status": service.status},
        }
    links = BusinessServiceCapability.objects.filter(**scope).select_related("business_service", "capability")
    for link in links.order_by("capability__key"):
        snapshot.capabilities_by_service.setdefault(link.business_service.key, []).append(
            {"id": link.capability.key, "name": link.capability.name, "status": link.capability.status}
        )
    for policy in Policy.objects.filter(**scope).order_by("key"):
        info = PolicyInfo(policy.key, policy.package, policy.version, policy.source)
        snapshot.policies.setdefault(policy.package, info)
        snapshot.policies[policy.key] = info
    return snapshot


_cache: dict[str, AuthoritySnapshot] = {}
_lock = threading.Lock()


def authority_snapshot(organization_id) -> AuthoritySnapshot:
    """The organization's snapshot at its current revision (one query when cached)."""
    revision = current_revision(organization_id)
    key = str(organization_id)
    cached = _cache.get(key)
    if cached is not None and cached.revision == revision:
        return cached
    snapshot = load_snapshot(organization_id, revision)
    with _lock:
        current = _cache.get(key)
        if current is None or current.revision <= revision:
            _cache[key] = snapshot
    return snapshot


def peek_snapshot(organization_id) -> AuthoritySnapshot | None:
    """The cached snapshot, if any (no query; not checked against the current revision)."""
    return _cache.get(str(organization_id))


def cached_snapshot(organization_id) -> tuple[AuthoritySnapshot, bool]:
    """The cached snapshot without asking the database, and False (not checked against the
    current revision: the write checks it); or a freshly checked one, and True."""
    cached = _cache.get(str(organization_id))
    if cached is not None:
        return cached, False
    return authority_snapshot(organization_id), True


def clear_snapshots() -> None:
    with _lock:
        _cache.clear()
