"""Editing a manifest in the console: the YAML an operator writes is validated whole (the
same checks as a file), written to its file in ``MANDATE_ACTIONS_DIR`` atomically, and the
catalogue reloaded for every process. A manifest that does not validate, or a reload that
fails, leaves the file as it was and the previous catalogue active (the reload's audit record
says why); a successful one is audited and in the ledger as every reload is."""

import os
import re
import tempfile
import threading
from pathlib import Path

from controlplane.gate import audit
from controlplane.gate.manifests import ManifestError, parse_manifest, read_manifest_bytes
from controlplane.gate.registry import ReloadResult, actions_dir, registry, reload

FILE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,120}\.ya?ml$")
_lock = threading.Lock()  # one edit at a time in this process (reload is atomic across processes)


def file_of(action_id: str) -> Path:
    """Where an action's manifest lives: the file it was loaded from, or ``<action_id>.yaml``."""
    directory = actions_dir()
    manifest = registry().get(action_id)
    if manifest is not None and FILE_NAME.match(manifest.source or ""):
        return directory / manifest.source
    return directory / f"{action_id}.yaml"


def current_text(action_id: str) -> str:
    path = file_of(action_id)
    try:
        return path.read_text(encoding="utf-8")
    except OSError:
        return ""


def save_manifest(action_id: str | None, text: str, actor: audit.Actor) -> ReloadResult:
    """Validate ``text``, write it as ``action_id``'s manifest (a new action when None: its
    own ``action_id`` names the file) and reload; ManifestError or PolicyError, with nothing
    changed, otherwise."""
    data = text.encode("utf-8")
    name = f"{action_id}.yaml" if action_id else "new manifest"
    manifest = parse_manifest(read_manifest_bytes(data, name), source=name)
    if action_id and manifest.action_id != action_id:
        raise ManifestError.one(name, "action_id", f"must stay '{action_id}' (add a new action instead)")
    if not action_id and registry().get(manifest.action_id) is not None:
        raise ManifestError.one(name, "action_id", f"'{manifest.action_id}' already exists: edit it instead")
    path = file_of(manifest.action_id)
    with _lock:
        previous = path.read_bytes() if path.exists() else None
        _write(path, data)
        try:
            return reload(actor=actor)
        except Exception:
            if previous is None:
                path.unlink(missing_ok=True)
            else:
                _write(path, previous)
            raise


def _write(path: Path, data: bytes) -> None:
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=".edit-", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(data)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
