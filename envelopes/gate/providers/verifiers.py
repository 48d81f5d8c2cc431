"""Did the action's effect happen? ``verify(plan, result)`` answers with positive evidence
only: no status, no file, or a mismatch is ``verification_failed``, never ``verified``.

- ``http_status``: the output's ``status`` is in ``verification_config.expected`` (also read
  as ``expected_status``, LatchGate's name): status codes, ``"2xx"`` classes, ``"200-299"``
  ranges or ``{"min", "max"}``; any 2xx when absent. ``required_fields`` must be present in a
  JSON body. When the host saw the HTTP exchange itself (always for ``builtin:http_api``; for
  a WASM module, its ``mandate.http`` calls), the reported status must equal the last one
  the host saw.
- ``fs_hash``: the host reads the file again — a write's SHA-256 equals the written
  content's, a read's equals what was returned, a deleted file is gone, a listed directory
  lists the same entries.
- ``none``: ``unverifiable_declared``.
"""

import hashlib
import os
from dataclasses import dataclass
from typing import Any

from envelopes.gate.providers import fs
from envelopes.gate.providers.result import ProviderResult

VERIFIED = "verified"
VERIFICATION_FAILED = "verification_failed"
UNVERIFIABLE_DECLARED = "unverifiable_declared"
PROVIDER_FAILED = "provider_failed_before_verification"
SKIPPED = "skipped"


@dataclass(frozen=True)
class Verification:
    outcome: str
    evidence: dict[str, Any] | None = None
    reason: str | None = None

    def to_wire(self) -> dict[str, Any]:
        """The receipt's tagged ``verification_outcome``: ``verified`` carries its evidence,
        ``verification_failed`` its reason, the others their status alone (the reference's
        variants; a reason for the rest stays in the logs)."""
        wire: dict[str, Any] = {"status": self.outcome}
        if self.outcome == VERIFIED and self.evidence is not None:
            wire["evidence"] = self.evidence
        if self.outcome == VERIFICATION_FAILED and self.reason is not None:
            wire["reason"] = self.reason
        return wire

    def is_fully_successful(self, result: ProviderResult) -> bool:
        return result.ok and self.outcome in (VERIFIED, UNVERIFIABLE_DECLARED)


def _failed(reason: str) -> Verification:
    return Verification(VERIFICATION_FAILED, reason=reason)


def _accepts(expected, status: int) -> bool | None:
    """Whether ``status`` is accepted; None when ``expected`` is not understood."""
    if isinstance(expected, bool):
        return None
    if isinstance(expected, int):
        return status == expected
    if isinstance(expected, str):
        text = expected.strip().lower()
        if len(text) == 3 and text[0].isdigit() and text[1:] == "xx":
            return status // 100 == int(text[0])
        low, _, high = text.partition("-")
        if low.isdigit() and high.isdigit():
            return int(low) <= status <= int(high)
        return int(text) == status if text.isdigit() else None
    if isinstance(expected, dict):
        low, high = expected.get("min", 100), expected.get("max", 599)
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in (low, high)):
            return None
        return low <= status <= high
    if isinstance(expected, list | tuple) and expected:
        answers = [_accepts(item, status) for item in expected]
        return None if None in answers else any(answers)
    return None


def http_status(plan, result: ProviderResult) -> Verification:
    status = result.output.get("status", result.output.get("status_code"))
    if isinstance(status, bool) or not isinstance(status, int):
        return _failed("the provider's output has no HTTP status")
    config = plan.verification_config or {}
    if not hasattr(config, "get"):
        return _failed("verification_config is not understood")
    expected = config.get("expected", config.get("expected_status"))
    accepted = 200 <= status <= 299 if expected is None or expected in ((), []) else _accepts(expected, status)
    if accepted is None:
        return _failed("verification_config.expected is not understood")
    if not accepted:
        return _failed(f"HTTP status {status} is not an accepted status")
    body = result.output.get("body")
    for name in config.get("required_fields") or ():
        if not isinstance(body, dict) or name not in body:
            return _failed(f"required field '{name}' is missing from the response body")
    seen = [o["status"] for o in result.observed if o.get("kind") == "http"]
    if seen and seen[-1] != status:
        return _failed(f"the provider reported HTTP {status} but the host saw HTTP {seen[-1]}")
    return Verification(VERIFIED, evidence={"status_code": status, "host_corroborated": bool(seen)})


def _disk_sha256(file: str) -> str | None:
    try:
        with open(file, "rb") as handle:
            return "sha256:" + hashlib.file_digest(handle, "sha256").hexdigest()
    except OSError:
        return None


def fs_hash(plan, result: ProviderResult) -> Verification:
    seen = next((o for o in result.observed if o.get("kind") == "fs"), None)
    if seen is None:
        return _failed("no host-observed file system evidence")
    operation, path, file = seen["operation"], seen["path"], seen["file"]
    if operation == "write":
        on_disk = _disk_sha256(file)
        if on_disk != seen["content_sha256"]:
            return _failed(f"{path} on disk does not hold the written content")
        return Verification(VERIFIED, evidence={"path": path, "sha256": on_disk, "bytes": seen["bytes"]})
    if operation == "read":
        on_disk = _disk_sha256(file)
        if on_disk != seen["sha256"]:
            return _failed(f"{path} on disk does not match what was read")
        return Verification(VERIFIED, evidence={"path": path, "sha256": on_disk, "bytes": seen["bytes"]})
    if operation == "delete":
        if os.path.lexists(file):
            return _failed(f"{path} still exists")
        return Verification(VERIFIED, evidence={"path": path, "deleted": True})
    if operation == "list":
        try:
            now = fs.entries_hash_of(file, path, plan)
        except OSError:
            now = None
        if now != seen["entries_sha256"]:
            return _failed(f"{path} no longer lists the same entries")
        return Verification(VERIFIED, evidence={"path": path, "entries": seen["entries"]})
    return _failed(f"operation {operation} cannot be verified")


VERIFIERS = {"http_status": http_status, "fs_hash": fs_hash}


def verify(plan, result: ProviderResult) -> Verification:
    if not result.ok:
        return Verification(PROVIDER_FAILED, reason=result.failure.reason)
    if plan.verifier_kind == "none":
        return Verification(UNVERIFIABLE_DECLARED)
    verifier = VERIFIERS.get(plan.verifier_kind)
    if verifier is None:
        return _failed(f"unknown verifier_kind {plan.verifier_kind}")
    return verifier(plan, result)
