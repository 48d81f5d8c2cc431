"""Rego policies, compiled and evaluated in-process with regopy (rego-cpp)."""

import json
import re
import threading
from dataclasses import dataclass

from regopy import Interpreter

PACKAGE_LINE = re.compile(r"^\s*package\s+([A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)\s*$", re.M)
PACKAGE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*$")


class PolicyError(Exception):
    """A policy that does not compile, or whose evaluation failed."""


def declared_package(source: str) -> str | None:
    match = PACKAGE_LINE.search(source)
    return match.group(1) if match else None


def _interpreter(module_name: str, source: str) -> Interpreter:
    interpreter = Interpreter()
    interpreter.add_module(module_name, source)
    return interpreter


def compile_check(package: str, source: str) -> None:
    """Raise PolicyError unless ``source`` compiles and declares ``package``."""
    found = declared_package(source)
    if found is None:
        raise PolicyError("source has no package declaration")
    if found != package:
        raise PolicyError(f"source declares package {found!r}, spec says {package!r}")
    try:
        _interpreter("policy.rego", source).query(f"data.{package}")
    except Exception as exc:  # regopy raises RegoError with the compiler's messages
        raise PolicyError(rego_error_message(exc)) from exc


def rego_error_message(exc: Exception) -> str:
    """The compiler's messages in a RegoError, in one line."""
    text = str(exc).strip()
    messages = re.findall(r"errormsg \d+:([^)]*)\)", text)
    return "; ".join(dict.fromkeys(messages)) if messages else (text.splitlines()[0] if text else type(exc).__name__)


@dataclass(frozen=True)
class PolicyDecision:
    allow: bool
    detail: dict


_compiled = threading.local()
MAX_COMPILED_PER_THREAD = 64


def _compiled_interpreter(source: str) -> Interpreter:
    """A compiled interpreter per policy source, per thread (an Interpreter is not shared
    across threads); compiling costs several times more than a query."""
    cache = getattr(_compiled, "by_source", None)
    if cache is None:
        cache = _compiled.by_source = {}
    interpreter = cache.get(source)
    if interpreter is None:
        if len(cache) >= MAX_COMPILED_PER_THREAD:
            cache.clear()
        interpreter = cache[source] = _interpreter("policy.rego", source)
    return interpreter


# Rego is a pure language except for a few built-ins that read the clock, randomness, the
# network or the runtime; a policy that mentions none of them gives the same decision for
# the same input, so its decisions are remembered (per process, keyed by the exact source
# and the input's canonical text). Agents repeat requests much alike; a cached decision
# costs ~10 µs against ~0.5-1 ms for a query.
IMPURE_BUILTIN = re.compile(
    r"\b(?:time\.now_ns|rand\.|uuid\.|http\.send|opa\.runtime|net\.|io\.jwt\.decode_verify|trace|print)"
)
MAX_REMEMBERED = 4096
_remembered: dict[tuple, "PolicyDecision"] = {}
_pure_sources: dict[str, bool] = {}


def is_pure(source: str) -> bool:
    pure = _pure_sources.get(source)
    if pure is None:
        if len(_pure_sources) >= MAX_COMPILED_PER_THREAD:
            _pure_sources.clear()
        pure = _pure_sources[source] = IMPURE_BUILTIN.search(source) is None
    return pure


def evaluate(package: str, source: str, rule: str, input_document: dict) -> PolicyDecision:
    """Evaluate ``data.<package>.<rule>`` with ``input``; undefined means deny. Decisions of
    pure policies are remembered (see ``IMPURE_BUILTIN``)."""
    if not is_pure(source):
        return _query(package, source, rule, input_document)
    try:
        key = (source, package, rule, json.dumps(input_document, sort_keys=True, allow_nan=False))
    except (TypeError, ValueError):
        return _query(package, source, rule, input_document)
    decision = _remembered.get(key)
    if decision is None:
        decision = _query(package, source, rule, input_document)
        if len(_remembered) >= MAX_REMEMBERED:
            _remembered.clear()
        _remembered[key] = decision
    return decision


def forget_decisions() -> None:
    _remembered.clear()


def _query(package: str, source: str, rule: str, input_document: dict) -> PolicyDecision:
    try:
        interpreter = _compiled_interpreter(source)
        interpreter.set_input(input_document)
        output = interpreter.query(f"data.{package}.{rule}")
    except Exception as exc:
        raise PolicyError(rego_error_message(exc)) from exc
    text = str(output).strip()
    if text == "undefined" or not text:
        value = None
    else:
        expressions = json.loads(text).get("expressions") or []
        value = expressions[0] if expressions else None
    return PolicyDecision(allow=value is True, detail={"result": value})
