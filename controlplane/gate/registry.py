"""The catalogue: the active manifests every process of the deployment serves.

``reload()`` reads ``MANDATE_ACTIONS_DIR`` and the Rego file, validates everything, and only
then writes the new active versions (one per action_id) and the policy source in one
transaction; any problem raises ``ManifestError``/``PolicyError`` and leaves the previous
catalogue active everywhere. The first ``registry()`` call on an empty database loads the
files the same way. Each process builds its ``Registry`` from the active rows and hashes the
WASM modules it will run at that moment (``Manifest.trust``), so a module swapped on disk is
refused as ``action_digest_mismatch`` rather than run.
"""

import functools
import hashlib
import logging
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path

import wasmtime
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from controlplane.gate import audit
from controlplane.gate.manifests import Manifest, ManifestError, Trust, parse_manifest, read_manifest_file
from controlplane.gate.rego import PolicyError, compile_check, read_policy_source
from controlplane.gate.state import Loaded, Observed, bump, locked_state, observe
from controlplane.models import ActionManifest

logger = logging.getLogger(__name__)

MANIFEST_SUFFIXES = (".yaml", ".yml")
MODULES_DIR = "modules"
MODULE_EXPORTS = {"memory", "alloc", "run"}


@dataclass(frozen=True)
class Registry:
    manifests: dict[str, Manifest]  # by action_id, sorted
    catalogue_version: int

    def get(self, action_id: str) -> Manifest | None:
        return self.manifests.get(action_id)

    def all(self) -> tuple[Manifest, ...]:
        return tuple(self.manifests.values())

    def __len__(self) -> int:
        return len(self.manifests)

    def __contains__(self, action_id) -> bool:
        return action_id in self.manifests


@dataclass(frozen=True)
class ReloadResult:
    manifests_loaded: int
    policy_reloaded: bool
    reloaded_at: datetime
    catalogue_version: int
    policy_version: int
    changed: tuple[str, ...]  # action_ids added, changed or removed


def actions_dir() -> Path:
    return Path(settings.MANDATE_ACTIONS_DIR)


# --- modules -------------------------------------------------------------------------------


@functools.cache
def _engine() -> wasmtime.Engine:
    """Created at first use, not at import: creating an engine installs wasmtime's signal
    handlers, and a ``faulthandler.enable()`` after them (pytest's, once Django has set up and
    imported this module) would take the traps of every module run (``unreachable``) and
    abort the process."""
    return wasmtime.Engine()


def _sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _module_candidates(directory: Path, manifest: Manifest) -> list[Path]:
    if manifest.module:
        return [directory / manifest.module]
    return sorted((directory / MODULES_DIR).glob("*.wasm"))


def _module_problem(manifest: Manifest, data: bytes) -> str | None:
    """Why the module breaks the convention (docs/gate.md), or None."""
    try:
        module = wasmtime.Module(_engine(), data)
    except Exception as exc:  # wasmtime raises WasmtimeError for bytes that are not a module
        return f"is not a valid WebAssembly module ({str(exc).splitlines()[0]})"
    declared = set(manifest.required_imports)
    for item in module.imports:
        name = f"{item.module}:{item.name}"
        if item.module != "mandate":
            return f"imports {item.module}.{item.name}: modules may import only from 'mandate'"
        if name not in declared:
            return f"imports {name}, which required_imports does not declare"
    missing = MODULE_EXPORTS - {item.name for item in module.exports}
    if missing:
        return f"does not export {', '.join(sorted(missing))}"
    return None


def with_trust(manifest: Manifest, directory: Path, *, strict: bool) -> Manifest:
    """The manifest with its trust verdict and, for WASM, exactly the module bytes hashed.
    ``strict`` (loading files): a module that breaks the convention is a manifest error;
    otherwise (a process building from the database) the action is marked untrusted."""
    if manifest.is_builtin:
        return replace(manifest, trust=Trust.BUILTIN)
    found = None
    for path in _module_candidates(directory, manifest):
        try:
            data = path.read_bytes()
        except OSError:
            continue
        if _sha256(data) == manifest.provider_module_digest:
            found = data
            break
        if manifest.module:
            return replace(manifest, trust=Trust.DIGEST_MISMATCH)
    if found is None:
        return replace(manifest, trust=Trust.MODULE_MISSING)
    problem = _module_problem(manifest, found)
    if problem:
        if strict:
            raise ManifestError.one(manifest.source, "module", f"the module {problem}")
        logger.error("gate: action %s untrusted: its module %s", manifest.action_id, problem)
        return replace(manifest, trust=Trust.MODULE_INVALID)
    return replace(manifest, trust=Trust.DIGEST_OK, module_bytes=found)


# --- reading the files ----------------------------------------------------------------------


def read_catalogue(directory: Path | None = None) -> list[Manifest]:
    """Every manifest in the directory, validated and with its trust verdict; ManifestError
    listing every problem of every file if any file is wrong."""
    directory = directory or actions_dir()
    if not directory.is_dir():
        raise ManifestError.one(str(directory), "", "the actions directory does not exist")
    problems, manifests, seen = [], [], {}
    for path in sorted(p for p in directory.iterdir() if p.suffix in MANIFEST_SUFFIXES and p.is_file()):
        try:
            manifest = parse_manifest(read_manifest_file(path, path.name), source=path.name)
            if manifest.action_id in seen:
                raise ManifestError.one(
                    path.name, "action_id", f"'{manifest.action_id}' is also declared in {seen[manifest.action_id]}"
                )
            seen[manifest.action_id] = path.name
            manifests.append(with_trust(manifest, directory, strict=True))
        except ManifestError as exc:
            problems += exc.problems
    if problems:
        raise ManifestError(problems)
    return manifests


# --- the process's registry ------------------------------------------------------------------


def _from_database(observed: Observed) -> tuple[Registry, Observed]:
    if not observed.catalogue_stamp:
        load_initial_catalogue()
        observed = observe(fresh=True)
    rows = ActionManifest.objects.filter(active=True).order_by("action_id")
    directory = actions_dir()
    manifests = {}
    for row in rows:
        try:
            manifest = parse_manifest(row.document, source=row.source.removeprefix("file:"))
        except ManifestError as exc:  # written by another release of the code
            logger.error("gate: stored manifest %s no longer validates: %s", row.action_id, exc)
            continue
        manifests[manifest.action_id] = with_trust(manifest, directory, strict=False)
    return Registry(manifests, observed.catalogue_version), observed


_registry: Loaded[Registry] = Loaded("catalogue", _from_database)


def registry() -> Registry:
    """The active catalogue (shared by every process; rebuilt here when it changes)."""
    return _registry.get()


def forget() -> None:
    """Drop this process's copy (tests; a process that must rebuild now)."""
    _registry.forget()


# --- reload ----------------------------------------------------------------------------------


def _sync(manifests: list[Manifest], now) -> list[str]:
    """Make the active rows equal ``manifests``; the action_ids that changed."""
    active = {row.action_id: row for row in ActionManifest.objects.filter(active=True)}
    wanted = {m.action_id: m for m in manifests}
    changed = sorted(
        {aid for aid, m in wanted.items() if aid not in active or active[aid].document_hash != m.document_hash}
        | (set(active) - set(wanted))
    )
    ActionManifest.objects.filter(active=True, action_id__in=changed).update(active=False)
    ActionManifest.objects.bulk_create(
        [
            ActionManifest(
                action_id=m.action_id,
                version=m.version,
                document=m.raw,
                document_hash=m.document_hash,
                provider_module_digest=m.provider_module_digest,
                source=f"file:{m.source}",
                loaded_at=now,
            )
            for aid, m in sorted(wanted.items())
            if aid in changed
        ]
    )
    return changed


def reload(*, actor: audit.Actor | None = None) -> ReloadResult:
    """Re-read the manifests and the policy and swap them in for every process, or raise
    (ManifestError, PolicyError) and change nothing but the audit of the failure."""
    actor = actor or audit.SYSTEM
    try:
        return _reload(actor)
    except (ManifestError, PolicyError) as exc:
        with transaction.atomic():
            audit.record(actor, audit.RELOAD_FAILED, resource_id="catalogue", details={"problem": str(exc)[:4000]})
        raise


def _reload(actor: audit.Actor) -> ReloadResult:
    from controlplane.gate.acl import rederive_sinks  # the ACL reads the registry

    manifests = read_catalogue(actions_dir())
    source = read_policy_source()
    compile_check(source)
    now = timezone.now()
    with transaction.atomic():
        state = locked_state()
        changed = _sync(manifests, now)
        policy_changed = state.policy_source != source
        state.policy_source = source
        state.reloaded_at = now
        state.save(update_fields=["policy_source", "reloaded_at", "updated_at"])
        new = Registry({m.action_id: m for m in sorted(manifests, key=lambda m: m.action_id)}, 0)
        sinks_changed = rederive_sinks(new)
        parts = ["catalogue"] + (["policy"] if policy_changed or sinks_changed else [])
        state = bump(state, *parts)
        new = replace(new, catalogue_version=state.catalogue_version)
        audit.record(
            actor,
            audit.RELOAD,
            resource_id="catalogue",
            details={
                "manifests_loaded": len(manifests),
                "changed": changed,
                "catalogue_version": state.catalogue_version,
                "policy_version": state.policy_version,
            },
        )
        stamp = state.catalogue_stamp
        transaction.on_commit(lambda: _registry.install(stamp, new))
    return ReloadResult(
        manifests_loaded=len(manifests),
        policy_reloaded=True,
        reloaded_at=now,
        catalogue_version=state.catalogue_version,
        policy_version=state.policy_version,
        changed=tuple(changed),
    )


def load_initial_catalogue() -> None:
    """The first load on an empty database: the files, as a reload by the system. If they
    do not load, the catalogue stays empty and the error is logged (and audited)."""
    with transaction.atomic():
        state = locked_state()
        if state.catalogue_stamp:
            return  # another process loaded it while this one waited for the lock
        try:
            with transaction.atomic():
                _reload(audit.SYSTEM)
        except (ManifestError, PolicyError) as exc:
            logger.error("gate: the action catalogue did not load, no action is available until a reload: %s", exc)
            audit.record(
                audit.SYSTEM, audit.RELOAD_FAILED, resource_id="catalogue", details={"problem": str(exc)[:4000]}
            )
            bump(state, "catalogue")
