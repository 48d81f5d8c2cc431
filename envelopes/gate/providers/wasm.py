"""WASM providers (``sha256:<hex>`` digests) on wasmtime; the ABI is in docs/gate.md.

A module is compiled once per digest (from bytes whose SHA-256 is the digest) and
pre-linked once per set of declared host imports; each call gets a fresh store with its own
fuel, memory limit and epoch deadline, so nothing survives from one call to the next. One
engine per process; a daemon thread advances its epoch every ``TICK_SECONDS`` and a store's
deadline is counted in those ticks. Host calls run on the caller's thread and find the
call's state (I/O budget, egress rules, deadline, logs) in a thread-local.
"""

import hashlib
import json
import logging
import math
import os
import threading
import time
from dataclasses import dataclass, field

import rfc8785
import wasmtime

from envelopes.gate.providers import egress
from envelopes.gate.providers.result import (
    INTERNAL_ERROR,
    POLICY_VIOLATION,
    PROVIDER_ERROR,
    TIMEOUT,
    Failure,
    ProviderContext,
    ProviderResult,
    failed,
)

logger = logging.getLogger(__name__)

TICK_SECONDS = 0.005
MAX_LOG_LINES = 64
MAX_LOG_CHARS = 1024
# The spellings a manifest's required_imports may use for each host function.
IMPORT_NAMES = {
    "mandate.log": "log",
    "mandate:log": "log",
    "latchgate:io/log": "log",
    "mandate.http": "http",
    "mandate:http": "http",
    "latchgate:io/http": "http",
}
I32, I64 = wasmtime.ValType.i32(), wasmtime.ValType.i64()
HOST_TYPES = {
    "log": wasmtime.FuncType([I32, I32], []),
    "http": wasmtime.FuncType([I32, I32], [I64]),
}
SIGNATURES = {"log": (["i32", "i32"], []), "http": (["i32", "i32"], ["i64"])}
EXPORTS = {"alloc": (["i32"], ["i32"]), "run": (["i32", "i32"], ["i64"])}


class HostStop(Exception):
    """Raised in a host function to end the run with ``failure``."""

    def __init__(self, failure: Failure):
        super().__init__(failure.reason)
        self.failure = failure


@dataclass
class CallState:
    rules: egress.EgressRules
    deadline: float
    max_io_calls: int
    io_calls: int = 0
    logs: list[str] = field(default_factory=list)
    observed: list[dict] = field(default_factory=list)

    def count_io(self) -> None:
        self.io_calls += 1
        if self.io_calls > self.max_io_calls:
            raise HostStop(Failure(POLICY_VIOLATION, f"the module exceeded max_io_calls ({self.max_io_calls})"))


_local = threading.local()


# --- engine, ticker, caches ------------------------------------------------------------------


class Runtime:
    """The process's engine, its epoch ticker and the compile and link caches."""

    def __init__(self):
        config = wasmtime.Config()
        config.consume_fuel = True
        config.epoch_interruption = True
        self.engine = wasmtime.Engine(config)
        self.modules: dict[str, wasmtime.Module] = {}
        self.prepared: dict[tuple[str, frozenset], wasmtime.InstancePre] = {}
        self.compilations = 0
        self.lock = threading.Lock()
        self.running = 0
        self.running_changed = threading.Condition()
        threading.Thread(target=self._tick, name="wasm-epoch", daemon=True).start()

    def _tick(self) -> None:
        # Ticks only while a call runs: an idle process does not wake 200 times a second.
        while True:
            with self.running_changed:
                while not self.running:
                    self.running_changed.wait()
            time.sleep(TICK_SECONDS)
            self.engine.increment_epoch()

    def started(self) -> None:
        with self.running_changed:
            self.running += 1
            self.running_changed.notify()

    def finished(self) -> None:
        with self.running_changed:
            self.running -= 1

    def module(self, digest: str, source) -> wasmtime.Module:
        module = self.modules.get(digest)
        if module is not None:
            return module
        with self.lock:
            if digest not in self.modules:
                data = source(digest) if source else None
                if not data:
                    raise HostStop(Failure(INTERNAL_ERROR, "the module's bytes are not available"))
                if "sha256:" + hashlib.sha256(data).hexdigest() != digest:
                    raise HostStop(Failure(INTERNAL_ERROR, "the module's bytes do not match its digest"))
                try:
                    self.modules[digest] = wasmtime.Module(self.engine, data)
                except wasmtime.WasmtimeError as exc:
                    raise HostStop(Failure(PROVIDER_ERROR, "the module does not compile")) from exc
                self.compilations += 1
            return self.modules[digest]

    def prepare(self, digest: str, module: wasmtime.Module, declared: frozenset) -> wasmtime.InstancePre:
        key = (digest, declared)
        prepared = self.prepared.get(key)
        if prepared is None:
            check_module(module, declared)
            linker = wasmtime.Linker(self.engine)
            for name in sorted(declared):
                linker.define_func("mandate", name, HOST_TYPES[name], HOST_FUNCTIONS[name], access_caller=True)
            prepared = linker.instantiate_pre(module)
            with self.lock:
                self.prepared[key] = prepared
        return prepared


_runtimes: dict[int, Runtime] = {}
_runtimes_lock = threading.Lock()


def runtime() -> Runtime:
    """One runtime per process (a forked child builds its own: threads do not survive a fork)."""
    pid = os.getpid()
    current = _runtimes.get(pid)
    if current is None:
        with _runtimes_lock:
            current = _runtimes.get(pid)
            if current is None:
                current = Runtime()
                _runtimes.clear()
                _runtimes[pid] = current
    return current


def declared_imports(required_imports) -> frozenset:
    return frozenset(IMPORT_NAMES[name] for name in required_imports if name in IMPORT_NAMES)


def _signature(func_type) -> tuple[list[str], list[str]]:
    return [str(p) for p in func_type.params], [str(r) for r in func_type.results]


def check_module(module: wasmtime.Module, declared: frozenset) -> None:
    """HostStop unless the module imports only declared host functions, with the ABI's
    types, and exports ``memory``, ``alloc`` and ``run``."""
    for item in module.imports:
        name = item.name if item.module == "mandate" else None
        if name not in declared:
            raise HostStop(
                Failure(
                    POLICY_VIOLATION, f"the module imports {item.module}.{item.name}, which the action does not declare"
                )
            )
        if not isinstance(item.type, wasmtime.FuncType) or _signature(item.type) != SIGNATURES[name]:
            raise HostStop(Failure(PROVIDER_ERROR, f"the module imports mandate.{name} with the wrong type"))
    exports = {item.name: item.type for item in module.exports}
    if not isinstance(exports.get("memory"), wasmtime.MemoryType):
        raise HostStop(Failure(PROVIDER_ERROR, "the module does not export its memory"))
    for name, signature in EXPORTS.items():
        if not isinstance(exports.get(name), wasmtime.FuncType) or _signature(exports[name]) != signature:
            raise HostStop(Failure(PROVIDER_ERROR, f"the module does not export {name} with the ABI's type"))


# --- host functions ----------------------------------------------------------------------------


def _read(caller, ptr: int, length: int) -> bytes:
    memory = caller.get("memory")
    if ptr < 0 or length < 0 or ptr + length > memory.data_len(caller):
        raise HostStop(Failure(PROVIDER_ERROR, "the module passed a range outside its memory"))
    return bytes(memory.read(caller, ptr, ptr + length))


def _write(caller, data: bytes) -> int:
    """Copies ``data`` into memory the module's ``alloc`` hands out; the packed pointer."""
    ptr = caller.get("alloc")(caller, len(data))
    memory = caller.get("memory")
    if ptr < 0 or ptr + len(data) > memory.data_len(caller):
        raise HostStop(Failure(PROVIDER_ERROR, "the module's alloc returned a range outside its memory"))
    memory.write(caller, data, ptr)
    return (ptr << 32) | len(data)


def host_log(caller, ptr: int, length: int) -> None:
    # Not an I/O call (max_io_calls counts http): lines are capped, and fuel bounds the calls.
    state: CallState = _local.state
    line = _read(caller, ptr, min(length, MAX_LOG_CHARS * 4)).decode("utf-8", "replace")[:MAX_LOG_CHARS]
    if len(state.logs) < MAX_LOG_LINES:
        state.logs.append(line)


def host_http(caller, ptr: int, length: int) -> int:
    state: CallState = _local.state
    state.count_io()
    try:
        request = json.loads(_read(caller, ptr, min(length, state.rules.max_response_bytes)))
        method, url = str(request["method"]).upper(), request["url"]
        headers = request.get("headers") or {}
        body = request.get("body")
        if not isinstance(url, str) or not isinstance(headers, dict) or not isinstance(body, str | None):
            raise TypeError
        headers = {str(k): str(v) for k, v in headers.items()}
    except (ValueError, KeyError, TypeError) as exc:
        raise HostStop(Failure(PROVIDER_ERROR, "the module's http request is not valid")) from exc
    try:
        answer = egress.send(
            state.rules,
            method,
            url,
            headers=headers,
            content=None if body is None else body.encode(),
            deadline=state.deadline,
        )
    except egress.EgressRefused as exc:
        raise HostStop(Failure(POLICY_VIOLATION, str(exc))) from exc
    except egress.EgressTimeout as exc:
        raise HostStop(Failure(TIMEOUT, str(exc))) from exc
    except egress.EgressFailed as exc:
        return _write(caller, json.dumps({"error": str(exc)}).encode())
    state.observed.append({"kind": "http", "method": method, "host": answer.host, "status": answer.status})
    reply = {"status": answer.status, "headers": answer.headers, "body": answer.content.decode("utf-8", "replace")}
    return _write(caller, json.dumps(reply, ensure_ascii=False).encode())


HOST_FUNCTIONS = {"log": host_log, "http": host_http}


# --- one call --------------------------------------------------------------------------------


def _trap_failure(exc: Exception, state: CallState) -> Failure:
    code = getattr(exc, "trap_code", None)
    if code == wasmtime.TrapCode.OUT_OF_FUEL:
        return Failure(PROVIDER_ERROR, "the module ran out of fuel")
    if code == wasmtime.TrapCode.INTERRUPT or time.monotonic() >= state.deadline:
        return Failure(TIMEOUT, "the module did not finish within timeout_seconds")
    lines = [line.strip() for line in str(getattr(exc, "message", exc)).splitlines() if line.strip()]
    trap = next((line.removeprefix("wasm trap:").strip() for line in lines if line.startswith("wasm trap:")), None)
    message = (trap or (lines[-1] if lines else "trap"))[:200]
    if "memory" in message and ("limit" in message or "minimum" in message):
        return Failure(PROVIDER_ERROR, "the module needs more memory than memory_mb")
    return Failure(PROVIDER_ERROR, f"the module trapped: {message}")


def _output(store, memory, packed: int, limit: int) -> dict:
    ptr, length = (packed >> 32) & 0xFFFFFFFF, packed & 0xFFFFFFFF
    if length > limit:
        raise HostStop(Failure(POLICY_VIOLATION, f"the module's output exceeds max_response_bytes ({limit})"))
    if ptr + length > memory.data_len(store):
        raise HostStop(Failure(PROVIDER_ERROR, "the module's output lies outside its memory"))
    try:
        output = json.loads(bytes(memory.read(store, ptr, ptr + length)).decode("utf-8")) if length else {}
    except (UnicodeDecodeError, ValueError) as exc:
        raise HostStop(Failure(PROVIDER_ERROR, "the module's output is not UTF-8 JSON")) from exc
    if not isinstance(output, dict):
        raise HostStop(Failure(PROVIDER_ERROR, "the module's output is not a JSON object"))
    return output


def run(plan, body, context: ProviderContext) -> ProviderResult:
    limits = plan.resource_limits
    state = CallState(
        rules=egress.EgressRules.for_plan(plan),
        deadline=time.monotonic() + float(limits.timeout_seconds),
        max_io_calls=limits.max_io_calls,
    )
    rt = runtime()
    store = wasmtime.Store(rt.engine)
    store.set_fuel(limits.fuel)
    store.set_limits(memory_size=limits.memory_mb * 1024 * 1024)
    store.set_epoch_deadline(max(1, math.ceil(float(limits.timeout_seconds) / TICK_SECONDS)))
    _local.state = state
    rt.started()
    exit_code, output, failure = 0, {}, None
    try:
        module = rt.module(plan.provider_module_digest, context.module_bytes)
        prepared = rt.prepare(plan.provider_module_digest, module, declared_imports(plan.required_imports))
        instance = prepared.instantiate(store)
        exports = instance.exports(store)
        memory, request = exports["memory"], rfc8785.dumps(body)
        ptr = exports["alloc"](store, len(request))
        if ptr < 0 or ptr + len(request) > memory.data_len(store):
            raise HostStop(Failure(PROVIDER_ERROR, "the module's alloc returned a range outside its memory"))
        memory.write(store, request, ptr)
        packed = exports["run"](store, ptr, len(request))
        if packed < 0:
            exit_code = packed
            failure = Failure(PROVIDER_ERROR, f"the module returned error {packed}")
        else:
            output = _output(store, memory, packed, plan.io.max_response_bytes)
    except HostStop as exc:
        failure = exc.failure
    except (wasmtime.Trap, wasmtime.WasmtimeError) as exc:
        failure = _trap_failure(exc, state)
    finally:
        _local.state = None
        rt.finished()
    try:
        consumed = limits.fuel - store.get_fuel()
    except wasmtime.WasmtimeError:
        consumed = 0
    for line in state.logs:
        logger.info("wasm %s [%s]: %s", plan.action_id, context.trace_id, line)
    fields = {"fuel_consumed": consumed, "observed": tuple(state.observed), "logs": tuple(state.logs)}
    if failure is not None:
        return failed(failure.failure_class, failure.reason, exit_code=exit_code or 1, **fields)
    evidence = tuple({k: v for k, v in seen.items() if k != "kind"} for seen in state.observed)
    return ProviderResult(output=output, summary="module returned", effect_evidence=evidence, **fields)
