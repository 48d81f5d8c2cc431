"""Providers: ``dispatch(plan, body, context)`` runs an action's plan with the provider its
digest names (``builtin:http_api``, ``builtin:fs``, or a WASM module ``sha256:<hex>``) and
``verify(plan, result)`` checks its effect. Neither raises for a failed action: the failure
is in the result, and the pipeline answers 502 action_execution_failed from it.
"""

import logging
import math
import time
from collections.abc import Mapping
from dataclasses import replace

from envelopes.gate.plan import BUILTIN_FS, BUILTIN_HTTP, ExecutionPlan
from envelopes.gate.providers import fs, http_api, wasm
from envelopes.gate.providers.result import (
    INTERNAL_ERROR,
    Failure,
    ProviderContext,
    ProviderResult,
    failed,
)
from envelopes.gate.providers.verifiers import Verification, verify

__all__ = [
    "Failure",
    "ProviderContext",
    "ProviderResult",
    "Verification",
    "dispatch",
    "dispatch_async",
    "on_loop",
    "verify",
]

logger = logging.getLogger(__name__)


def _provider(digest: str):
    if digest == BUILTIN_HTTP:
        return http_api.run
    if digest == BUILTIN_FS:
        return fs.run
    if digest.startswith("sha256:"):
        return wasm.run
    return None


def dispatch(plan: ExecutionPlan, body: Mapping, context: ProviderContext) -> ProviderResult:
    """Run ``plan`` for the request ``body``; the result carries ``duration_ms``."""
    started = time.perf_counter()
    provider = _provider(plan.provider_module_digest)
    if provider is None:
        return _timed(failed(INTERNAL_ERROR, "the action names no known provider"), started)
    try:
        result = provider(plan, body, context)
    except Exception:
        result = _unexpected(plan, context)
    return _timed(result, started)


def on_loop(plan: ExecutionPlan) -> bool:
    """Whether ``dispatch_async`` runs ``plan`` on the event loop (else ``dispatch`` blocks)."""
    return plan.provider_module_digest == BUILTIN_HTTP


async def dispatch_async(plan: ExecutionPlan, body: Mapping, context: ProviderContext) -> ProviderResult:
    """``dispatch`` of a plan ``on_loop``, without blocking the running loop."""
    started = time.perf_counter()
    try:
        result = await http_api.run_async(plan, body, context)
    except Exception:
        result = _unexpected(plan, context)
    return _timed(result, started)


def _unexpected(plan: ExecutionPlan, context: ProviderContext) -> ProviderResult:
    # A bug, not the action's fault: the receipt says internal_error, the log has the trace.
    logger.exception("provider for %s failed unexpectedly [%s]", plan.action_id, context.trace_id)
    return failed(INTERNAL_ERROR, "the provider failed unexpectedly")


def _timed(result: ProviderResult, started: float) -> ProviderResult:
    return replace(result, duration_ms=math.ceil((time.perf_counter() - started) * 1000))
