"""``builtin:fs``: read, write, list and delete files under the session's ``fs_root``.

Paths are relative and may not contain ``..``. A path must match one of the action's
``allowed_paths`` globs and none of its ``denied_paths`` (denied always wins) — both as
asked and after symlinks are resolved, and the resolved path must stay under the root, so a
link cannot lead out of the root or into a denied file. Files are opened without following
a final symlink. Writes go to a temporary file that replaces the target, so a reader never
sees half a file; the file is hashed again after the write for the evidence and the
``fs_hash`` verifier.

Globs: ``*`` and ``?`` stay within one path segment, ``**`` spans any number of segments
(``src/**`` covers ``src`` itself; ``**/.env`` covers ``.env``); the root itself is ``.``.
"""

import base64
import binascii
import hashlib
import os
import re
import stat
import tempfile
from functools import lru_cache
from pathlib import Path

from envelopes.gate.providers.result import (
    INTERNAL_ERROR,
    POLICY_VIOLATION,
    PROVIDER_ERROR,
    ProviderContext,
    ProviderResult,
    failed,
)

OPERATIONS = ("read", "write", "list", "delete")
# The side effect each operation is; the policy's sinks come from declared_side_effects, so an
# operation whose effect the manifest does not declare is refused.
EFFECTS = {"read": "fs_read", "list": "fs_read", "write": "fs_write", "delete": "fs_delete"}
MAX_PATH_CHARS = 4096
MAX_LISTED = 10_000


class FsRefused(Exception):
    failure_class = POLICY_VIOLATION


class FsFailed(Exception):
    failure_class = PROVIDER_ERROR


class FsUnavailable(FsFailed):
    """The gate's own set-up is wrong (no root for the session), not the request."""

    failure_class = INTERNAL_ERROR


@lru_cache(maxsize=1024)
def _glob(pattern: str) -> re.Pattern:
    out, i = [], 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("/**", i) and i + 3 == len(pattern):
            out.append("(?:/.*)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        elif pattern[i] == "[" and "]" in pattern[i + 2 :]:
            end = pattern.index("]", i + 2)
            inner = pattern[i + 1 : end]
            out.append("[" + ("^" + re.escape(inner[1:]) if inner[:1] in "!^" else re.escape(inner)) + "]")
            i = end + 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return re.compile("".join(out), re.DOTALL)


def glob_matches(pattern: str, path: str) -> bool:
    return bool(_glob(pattern.strip().removeprefix("./")).fullmatch(path))


def path_decision(path: str, allowed_paths, denied_paths) -> str | None:
    """None when the relative ``path`` may be used; otherwise why not."""
    if any(glob_matches(p, path) for p in denied_paths):
        return f"path {path} is denied for this action"
    if not any(glob_matches(p, path) for p in allowed_paths):
        return f"path {path} is not in the action's allowed paths"
    return None


def normalize(path) -> str:
    """The relative path as segments joined by ``/`` (``.`` for the root), or FsRefused."""
    if not isinstance(path, str) or len(path) > MAX_PATH_CHARS:
        raise FsRefused("path must be a relative path of at most 4096 characters")
    if "\x00" in path or "\\" in path:
        raise FsRefused("path must not contain NUL or backslashes")
    if path.startswith("/") or path.startswith("~"):
        raise FsRefused("path must be relative to the session's root")
    segments = [s for s in path.split("/") if s not in ("", ".")]
    if ".." in segments:
        raise FsRefused("path must not contain '..'")
    return "/".join(segments) or "."


def _sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _read_file(file: str, limit: int) -> bytes:
    # O_NONBLOCK: a FIFO in the root must not hang the call (no effect on regular files).
    fd = os.open(file, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise FsFailed("path is not a regular file")
        if info.st_size > limit:
            raise FsRefused(f"file exceeds max_file_bytes ({limit})")
        chunks, size = [], 0
        while chunk := os.read(fd, 1 << 20):
            size += len(chunk)
            if size > limit:
                raise FsRefused(f"file exceeds max_file_bytes ({limit})")
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


class Session:
    """One call's view of the root and the action's rules."""

    def __init__(self, plan, root):
        try:
            self.root = Path(root).resolve(strict=True)
        except (OSError, TypeError) as exc:
            raise FsUnavailable("the session has no usable fs_root") from exc
        if not self.root.is_dir():
            raise FsUnavailable("the session has no usable fs_root")
        self.rules = plan.fs
        self.effects = set(plan.declared_side_effects)

    def locate(self, requested) -> tuple[str, str]:
        """(relative path, absolute resolved path) for a permitted path, or FsRefused."""
        relative = normalize(requested)
        if why := path_decision(relative, self.rules.allowed_paths, self.rules.denied_paths):
            raise FsRefused(why)
        resolved = os.path.realpath(self.root / relative)
        if os.path.commonpath([resolved, self.root]) != str(self.root):
            raise FsRefused(f"path {relative} resolves outside the session's root")
        real_relative = os.path.relpath(resolved, self.root).replace(os.sep, "/")
        if real_relative != relative and path_decision(
            real_relative, self.rules.allowed_paths, self.rules.denied_paths
        ):
            raise FsRefused(f"path {relative} resolves to a path the action may not use")
        return relative, resolved

    def permits(self, operation: str, mode: str | None = None) -> bool:
        allowed = set(self.rules.allowed_operations)
        declared = EFFECTS[operation] in self.effects
        return declared and (operation in allowed or (operation == "write" and mode in allowed))


def read(session: Session, body) -> ProviderResult:
    relative, file = session.locate(body.get("path"))
    data = _read_file(file, session.rules.max_file_bytes)
    digest = _sha256(data)
    try:
        encoding, content = "utf-8", data.decode("utf-8")
    except UnicodeDecodeError:
        encoding, content = "base64", base64.b64encode(data).decode()
    seen = {"operation": "read", "path": relative, "sha256": digest, "bytes": len(data)}
    return ProviderResult(
        output={"path": relative, "bytes": len(data), "sha256": digest, "encoding": encoding, "content": content},
        summary=f"read {relative} ({len(data)} bytes)",
        effect_evidence=(seen,),
        observed=({"kind": "fs", "file": file, **seen},),
    )


def _listing(directory: str, relative: str, denied_paths) -> list[dict]:
    """The directory's entries, sorted, without those a denied path covers."""
    entries = []
    with os.scandir(directory) as items:
        for item in items:
            child = item.name if relative == "." else f"{relative}/{item.name}"
            if any(glob_matches(p, child) for p in denied_paths):
                continue
            info = item.stat(follow_symlinks=False)
            kind = "dir" if stat.S_ISDIR(info.st_mode) else "file" if stat.S_ISREG(info.st_mode) else "other"
            entries.append({"name": item.name, "type": kind, "bytes": info.st_size if kind == "file" else None})
    return sorted(entries, key=lambda e: e["name"])


def _entries_hash(entries: list[dict]) -> str:
    return _sha256("\n".join(f"{e['type']}:{e['name']}" for e in entries).encode())


def entries_hash_of(directory: str, relative: str, plan) -> str:
    """What a listing of ``directory`` hashes to now (the fs_hash verifier lists again)."""
    return _entries_hash(_listing(directory, relative, plan.fs.denied_paths))


def listing(session: Session, body) -> ProviderResult:
    relative, directory = session.locate(body.get("path", "."))
    if not os.path.isdir(directory):
        raise FsFailed(f"path {relative} is not a directory")
    entries = _listing(directory, relative, session.rules.denied_paths)
    truncated = len(entries) > MAX_LISTED
    shown = entries[:MAX_LISTED]
    seen = {"operation": "list", "path": relative, "entries": len(entries)}
    return ProviderResult(
        output={"path": relative, "entries": shown, "truncated": truncated},
        summary=f"listed {relative} ({len(entries)} entries)",
        effect_evidence=(seen,),
        observed=({"kind": "fs", "file": directory, "entries_sha256": _entries_hash(entries), **seen},),
    )


def _content(body, limit: int) -> bytes:
    has_text, has_base64 = "content" in body, "content_base64" in body
    if has_text == has_base64:
        raise FsFailed("write needs exactly one of content and content_base64")
    if has_text:
        if not isinstance(body["content"], str):
            raise FsFailed("content must be text")
        data = body["content"].encode("utf-8")
    else:
        try:
            data = base64.b64decode(body["content_base64"], validate=True)
        except (binascii.Error, TypeError, ValueError) as exc:
            raise FsFailed("content_base64 is not valid base64") from exc
    if len(data) > limit:
        raise FsRefused(f"content exceeds max_file_bytes ({limit})")
    return data


def write(session: Session, body, mode: str) -> ProviderResult:
    relative, file = session.locate(body.get("path"))
    limit = session.rules.max_file_bytes
    data = _content(body, limit)
    exists = os.path.lexists(file)
    if exists and not os.path.isfile(file):
        raise FsFailed(f"path {relative} is not a regular file")
    if mode == "create" and exists:
        raise FsFailed(f"file {relative} already exists (mode create)")
    before = _sha256(_read_file(file, max(limit, os.path.getsize(file)))) if exists else None
    expected = body.get("expected_before_hash")
    if expected is not None and expected != before:
        raise FsFailed(f"file {relative} does not have the expected_before_hash")
    parent = os.path.dirname(file)
    os.makedirs(parent, exist_ok=True)
    fd, temporary = tempfile.mkstemp(dir=parent, prefix=".mandate-")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temporary, stat.S_IMODE(os.stat(file).st_mode) if exists else 0o644)
        if mode == "create":
            os.link(temporary, file)  # fails if the file appeared meanwhile
        else:
            os.replace(temporary, file)
    except FileExistsError as exc:
        raise FsFailed(f"file {relative} already exists (mode create)") from exc
    finally:
        if os.path.lexists(temporary):
            os.unlink(temporary)
    written = _read_file(file, limit)
    evidence = {"operation": "write", "path": relative, "sha256": _sha256(written), "bytes": len(written)}
    if before:
        evidence["before_sha256"] = before
    return ProviderResult(
        output={"path": relative, "bytes": len(written), "sha256": evidence["sha256"], "created": not exists},
        summary=f"wrote {relative} ({len(written)} bytes)",
        effect_evidence=(evidence,),
        observed=({"kind": "fs", "file": file, "content_sha256": _sha256(data), **evidence},),
    )


def delete(session: Session, body) -> ProviderResult:
    relative, file = session.locate(body.get("path"))
    if not os.path.isfile(file):
        raise FsFailed(f"path {relative} is not an existing file")
    data = _read_file(file, max(session.rules.max_file_bytes, os.path.getsize(file)))
    os.unlink(file)
    evidence = {"operation": "delete", "path": relative, "before_sha256": _sha256(data), "bytes": len(data)}
    return ProviderResult(
        output={"path": relative, "deleted": True},
        summary=f"deleted {relative}",
        effect_evidence=(evidence,),
        observed=({"kind": "fs", "file": file, **evidence},),
    )


def run(plan, body, context: ProviderContext) -> ProviderResult:
    operation = body.get("operation") if isinstance(body, dict) else None
    if operation not in OPERATIONS:
        return failed(PROVIDER_ERROR, "operation must be one of read, write, list, delete")
    mode = body.get("mode", "overwrite") if operation == "write" else None
    if mode not in (None, "overwrite", "create"):
        return failed(PROVIDER_ERROR, "mode must be overwrite or create")
    try:
        session = Session(plan, context.fs_root)
        if not session.permits(operation, mode):
            raise FsRefused(f"operation {operation}{f' ({mode})' if mode else ''} is not allowed for this action")
        if operation == "read":
            return read(session, body)
        if operation == "list":
            return listing(session, body)
        if operation == "write":
            return write(session, body, mode)
        return delete(session, body)
    except (FsRefused, FsFailed) as exc:
        return failed(exc.failure_class, str(exc))
    except FileNotFoundError:
        return failed(PROVIDER_ERROR, "no such file or directory")
    except OSError as exc:
        if exc.errno == getattr(os, "ELOOP", 40):
            return failed(POLICY_VIOLATION, "path is a symbolic link")
        return failed(INTERNAL_ERROR if exc.errno is None else PROVIDER_ERROR, f"file system error ({exc.strerror})")
