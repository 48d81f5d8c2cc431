"""Learned targets: domains and paths an action may use beyond its manifest, taught by an
approval (``learn_domain=``), the CLI or an operator, and what each action may reach now
(``effective_domains``, ``effective_paths``).

The learned rows are one snapshot per process, rebuilt when ``targets_version`` moves.
Validation is ``targets.py``'s; a manifest's denied paths always win over anything learned.
"""

from dataclasses import dataclass

from django.db import transaction

from controlplane.choices import EgressProfile, TargetSource
from controlplane.gate import audit
from controlplane.gate.manifests import Manifest
from controlplane.gate.registry import registry
from controlplane.gate.state import Loaded, Observed, bump, locked_state
from controlplane.gate.targets import (
    TargetError,
    domain_matches,
    glob_matches,
    host_of,
    normalize_path,
    validate_glob,
    validate_learned_domain,
)
from controlplane.models import LearnedDomain, LearnedPath
from governance.errors import GateError


@dataclass(frozen=True)
class DomainRules:
    """The domains an action may reach: its manifest's and the learned ones."""

    declared: tuple[str, ...]
    learned: tuple[str, ...]

    @property
    def domains(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(self.declared + self.learned))

    def __iter__(self):
        return iter(self.domains)

    def allows(self, host: str) -> bool:
        host = host_of(host)
        return any(domain_matches(entry, host) for entry in self.domains)


@dataclass(frozen=True)
class PathRules:
    """The paths an fs action may use: allowed by its manifest or learned, and never one its
    manifest denies."""

    allowed: tuple[str, ...]
    learned: tuple[str, ...]
    denied: tuple[str, ...]

    def classify(self, path: str) -> str:
        """``denied``, ``allowed`` or ``unresolved`` (a person may approve and learn it). A
        path that cannot be placed under the fs_root (absolute, ``..``) is denied."""
        try:
            normalized = normalize_path(path)
        except TargetError:
            return "denied"
        if any(glob_matches(glob, normalized) for glob in self.denied):
            return "denied"
        if any(glob_matches(glob, normalized) for glob in self.allowed + self.learned):
            return "allowed"
        return "unresolved"

    def allows(self, path: str) -> bool:
        return self.classify(path) == "allowed"

    def denies(self, path: str) -> bool:
        return self.classify(path) == "denied"


@dataclass(frozen=True)
class LearnedSnapshot:
    domains: dict[str, tuple[str, ...]]
    paths: dict[str, tuple[str, ...]]


def _load(observed: Observed) -> tuple[LearnedSnapshot, Observed]:
    domains: dict[str, list[str]] = {}
    for action_id, domain in LearnedDomain.objects.order_by("action_id", "domain").values_list("action_id", "domain"):
        domains.setdefault(action_id, []).append(domain)
    paths: dict[str, list[str]] = {}
    for action_id, path in LearnedPath.objects.order_by("action_id", "path").values_list("action_id", "path"):
        paths.setdefault(action_id, []).append(path)
    snapshot = LearnedSnapshot(
        {key: tuple(value) for key, value in domains.items()}, {key: tuple(value) for key, value in paths.items()}
    )
    return snapshot, observed


_learned: Loaded[LearnedSnapshot] = Loaded("targets", _load)


def forget() -> None:
    _learned.forget()


def effective_domains(action_id: str, manifest: Manifest | None = None) -> DomainRules:
    manifest = manifest or registry().get(action_id)
    declared = manifest.egress.allowed_domains if manifest is not None else ()
    return DomainRules(declared, _learned.get().domains.get(action_id, ()))


def effective_paths(action_id: str, manifest: Manifest | None = None) -> PathRules:
    manifest = manifest or registry().get(action_id)
    fs = manifest.fs if manifest is not None else None
    if fs is None:
        return PathRules((), (), ())
    return PathRules(fs.allowed_paths, _learned.get().paths.get(action_id, ()), fs.denied_paths)


# --- changing ----------------------------------------------------------------------------------


def _actor(added_by) -> audit.Actor:
    return added_by if isinstance(added_by, audit.Actor) else audit.Actor.named(str(added_by or "unknown"))


def _source(source) -> str:
    if source not in TargetSource.values:
        raise GateError(400, "invalid_request", reason=f"source must be one of {', '.join(TargetSource.values)}")
    return str(source)


def _manifest(action_id) -> Manifest:
    manifest = registry().get(action_id) if isinstance(action_id, str) else None
    if manifest is None:
        raise GateError(404, "action_not_found")
    return manifest


def learn_domain(action_id, domain, source, added_by, approval_id=None, *, exist_ok=False) -> LearnedDomain:
    """Teach ``action_id`` a domain. 400 ``invalid_domain`` (an IP, localhost, one label, an
    over-broad wildcard, or an action that makes no HTTP calls), 404 ``action_not_found``,
    409 ``domain_already_exists`` (unless ``exist_ok``: then the existing row)."""
    manifest = _manifest(action_id)
    source = _source(source)
    actor = _actor(added_by)
    if manifest.egress.profile != EgressProfile.PROXY_ALLOWLIST:
        raise GateError(400, "invalid_domain", reason=f"action '{action_id}' makes no HTTP calls")
    try:
        domain = validate_learned_domain(domain)
    except TargetError as exc:
        raise GateError(400, "invalid_domain", reason=str(exc)) from exc
    declared = manifest.egress.allowed_domains
    return _add(LearnedDomain, "domain", domain, declared, action_id, source, actor, approval_id, exist_ok)


def learn_path(action_id, path, source, added_by, approval_id=None, *, exist_ok=False) -> LearnedPath:
    """Teach an fs action a path glob (relative to the session's fs_root). 400
    ``invalid_path`` (absolute, ``..``, a catch-all, one the manifest denies, or an action
    without files), 404 ``action_not_found``, 409 ``path_already_exists``."""
    manifest = _manifest(action_id)
    source = _source(source)
    actor = _actor(added_by)
    if manifest.fs is None:
        raise GateError(400, "invalid_path", reason=f"action '{action_id}' does not use files")
    try:
        glob = validate_glob(path, learned=True)
    except TargetError as exc:
        raise GateError(400, "invalid_path", reason=str(exc)) from exc
    denied = [pattern for pattern in manifest.fs.denied_paths if glob_matches(pattern, glob)]
    if denied:
        raise GateError(400, "invalid_path", reason=f"'{glob}' is denied by the manifest ({denied[0]})")
    declared = manifest.fs.allowed_paths
    return _add(LearnedPath, "path", glob, declared, action_id, source, actor, approval_id, exist_ok)


def _add(model, field: str, value: str, declared, action_id, source, actor, approval_id, exist_ok):
    """One learned domain or path: stored, the targets' stamp bumped and audited in one
    transaction; 409 ``<field>_already_exists`` when learned or declared already (unless
    ``exist_ok``: then the existing row, or an unsaved one for a declared target)."""
    with transaction.atomic():
        state = locked_state()
        existing = model.objects.filter(action_id=action_id, **{field: value}).first()
        if existing is not None or value in declared:
            if exist_ok:
                return existing or model(action_id=action_id, source=source, added_by=actor.name, **{field: value})
            raise GateError(409, f"{field}_already_exists")
        row = model.objects.create(
            action_id=action_id, source=source, added_by=actor.name, approval_id=approval_id, **{field: value}
        )
        bump(state, "targets")
        audit.record(
            actor,
            audit.DOMAIN_ADD if field == "domain" else audit.PATH_ADD,
            resource_id=f"{action_id}/{value}",
            details={"action_id": action_id, field: value, "source": source, "approval_id": approval_id},
        )
    return row


def _normalized_domain(domain) -> str:
    try:
        return validate_learned_domain(domain)
    except TargetError as exc:
        raise GateError(400, "invalid_domain", reason=str(exc)) from exc


def _normalized_glob(path) -> str:
    try:
        return validate_glob(path)
    except TargetError as exc:
        raise GateError(400, "invalid_path", reason=str(exc)) from exc


def forget_domain(action_id: str, domain, *, actor: audit.Actor) -> bool:
    """Remove a learned domain; False if it was not learned."""
    domain = _normalized_domain(domain)
    with transaction.atomic():
        state = locked_state()
        deleted, _ = LearnedDomain.objects.filter(action_id=action_id, domain=domain).delete()
        if deleted:
            bump(state, "targets")
            audit.record(
                actor,
                audit.DOMAIN_REMOVE,
                resource_id=f"{action_id}/{domain}",
                details={"action_id": action_id, "domain": domain},
            )
    return bool(deleted)


def forget_path(action_id: str, path, *, actor: audit.Actor) -> bool:
    """Remove a learned path; False if it was not learned."""
    glob = _normalized_glob(path)
    with transaction.atomic():
        state = locked_state()
        deleted, _ = LearnedPath.objects.filter(action_id=action_id, path=glob).delete()
        if deleted:
            bump(state, "targets")
            audit.record(
                actor,
                audit.PATH_REMOVE,
                resource_id=f"{action_id}/{glob}",
                details={"action_id": action_id, "path": glob},
            )
    return bool(deleted)


def _clear(model, change, *, actor: audit.Actor, action_id: str | None) -> int:
    with transaction.atomic():
        state = locked_state()
        rows = model.objects.all() if action_id is None else model.objects.filter(action_id=action_id)
        deleted, _ = rows.delete()
        if deleted:
            bump(state, "targets")
            audit.record(
                actor, change, resource_id=action_id or "*", details={"action_id": action_id, "deleted_count": deleted}
            )
    return deleted


def clear_domains(*, actor: audit.Actor, action_id: str | None = None) -> int:
    """Remove every learned domain (of one action, if given); how many were removed."""
    return _clear(LearnedDomain, audit.DOMAIN_CLEAR, actor=actor, action_id=action_id)


def clear_paths(*, actor: audit.Actor, action_id: str | None = None) -> int:
    return _clear(LearnedPath, audit.PATH_CLEAR, actor=actor, action_id=action_id)


def learned_domains(action_id: str | None = None):
    rows = LearnedDomain.objects.order_by("action_id", "domain")
    return list(rows if action_id is None else rows.filter(action_id=action_id))


def learned_paths(action_id: str | None = None):
    rows = LearnedPath.objects.order_by("action_id", "path")
    return list(rows if action_id is None else rows.filter(action_id=action_id))
