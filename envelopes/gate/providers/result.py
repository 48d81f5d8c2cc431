"""What a provider is given (ProviderContext) and what it hands back (ProviderResult).

A provider never raises for a failed action: the failure is part of the result (class and
reason), so the pipeline can still write the receipt and the ledger event before it answers
502 action_execution_failed.
"""

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

# LatchGate's failure classes a provider can produce (verification_failed is the verifier's).
PROVIDER_ERROR = "provider_error"
TIMEOUT = "timeout"
POLICY_VIOLATION = "policy_violation"
INTERNAL_ERROR = "internal_error"


class Failure(NamedTuple):
    failure_class: str
    reason: str


@dataclass(frozen=True)
class ProviderContext:
    """Per-call inputs that are not part of the plan. ``secrets(name)`` returns a secret's
    value or None; ``module_bytes(digest)`` the bytes of a WASM module (asked only when the
    module is not compiled yet); ``fs_root`` is the session's directory for ``builtin:fs``."""

    trace_id: str = ""
    fs_root: str | os.PathLike | None = None
    secrets: Callable[[str], str | None] | None = None
    module_bytes: Callable[[str], bytes | None] | None = None


@dataclass(frozen=True)
class ProviderResult:
    output: dict[str, Any]
    exit_code: int = 0
    fuel_consumed: int = 0
    duration_ms: int = 0
    effect_evidence: tuple[dict[str, Any], ...] = ()
    failure: Failure | None = None
    summary: str = ""
    # What the host itself saw (HTTP statuses, files and their hashes) for the verifier to
    # cross-check the provider's output. Holds absolute paths: never put it in a receipt.
    observed: tuple[dict[str, Any], ...] = field(default=(), repr=False)
    logs: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return self.failure is None

    def runtime(self) -> dict[str, int]:
        return {"duration_ms": self.duration_ms, "exit_code": self.exit_code, "fuel_consumed": self.fuel_consumed}

    def normalized_result(self) -> dict[str, str]:
        """The receipt's tagged ``normalized_result``."""
        if self.failure is None:
            return {"kind": "success", "summary": self.summary}
        kind = {TIMEOUT: "timeout", INTERNAL_ERROR: "internal_error"}.get(
            self.failure.failure_class, "provider_failure"
        )
        return {"kind": kind, "reason": self.failure.reason}


def failed(failure_class: str, reason: str, **fields) -> ProviderResult:
    return ProviderResult(
        output={}, exit_code=fields.pop("exit_code", 1), failure=Failure(failure_class, reason), **fields
    )
