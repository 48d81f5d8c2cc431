"""The gate's Rego, compiled once per policy snapshot (source + data) into a regopy bundle.

A bundle query costs about a tenth of a plain ``Interpreter.query`` (which plans the query
on every call), so the execute path can afford a real Rego evaluation per call
(docs/gate.md, "Policy": the figures). regopy interpreters are not shared between threads:
each thread builds its own from the snapshot on first use.
"""

import json
import threading
from pathlib import Path

from django.conf import settings
from regopy import Interpreter

from controlplane.services.policies import PolicyError, is_pure, rego_error_message
from governance.control_characters import CONTROL_CHARACTERS

ENTRYPOINT = "mandate/gate/decision"
MAX_REMEMBERED = 8192
MODULE_NAME = "mandate_gate.rego"

__all__ = ["CompiledPolicy", "PolicyError", "compile_check", "read_policy_source"]


def read_policy_source() -> str:
    """The Rego file (``MANDATE_GATE_POLICY_FILE``) as a reload reads it."""
    path = Path(settings.MANDATE_GATE_POLICY_FILE)
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise PolicyError(f"{path.name}: cannot be read ({exc})") from exc


def _interpreter(source: str, data: dict) -> tuple[Interpreter, object]:
    interpreter = Interpreter()
    try:
        interpreter.add_module(MODULE_NAME, source)
        interpreter.add_data({"mandate": {"gate": rego_safe(data)}})
        bundle = interpreter.build(None, [ENTRYPOINT])
    except Exception as exc:  # regopy raises RegoError with the compiler's messages
        raise PolicyError(rego_error_message(exc)) from exc
    return interpreter, bundle


def compile_check(source: str) -> None:
    """Raise PolicyError unless ``source`` compiles and defines ``data.mandate.gate.decision``."""
    CompiledPolicy(source, {"acl": {}, "allowlist": {}, "policy_version": 0}).evaluate(
        {
            "principal": "check",
            "action": {
                "action_id": "check",
                "risk_level": "low",
                "side_effects": [],
                "required_scopes": [],
                "trusted": False,
            },
            "scopes": [],
            "budget": {"limited": False, "exhausted": False},
            "target": {"sensitive_path": False, "denied_paths": [], "unresolved_paths": [], "unresolved_domains": []},
        }
    )


def rego_safe(value):
    """``value`` with every string free of double quotes and control characters: regopy 1.5
    returns strings unescaped in its JSON output, so a quote in an agent id or a path would
    make every answer unreadable. Quotes become U+201D, which no id, scope or glob holds."""
    if isinstance(value, str):
        return CONTROL_CHARACTERS.sub("", value).replace('"', "\u201d")
    if isinstance(value, dict):
        return {rego_safe(key): rego_safe(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [rego_safe(item) for item in value]
    return value


class CompiledPolicy:
    """One policy snapshot; ``evaluate(input)`` returns the decision document.

    A pure policy (no clock, randomness or network built-ins: ``is_pure``) gives the same
    decision for the same input, so decisions are remembered per snapshot, keyed by the
    input's canonical text: agents repeat calls much alike, and a remembered decision costs
    ~15 µs against ~0.3 ms for a bundle query. The Rego still makes every decision the first
    time; a new snapshot (any policy change) starts with nothing remembered.
    """

    def __init__(self, source: str, data: dict):
        self.source = source
        self.data = data
        self.remembers = is_pure(source)
        self._local = threading.local()
        self._remembered: dict[str, dict] = {}

    def _compiled(self):
        compiled = getattr(self._local, "compiled", None)
        if compiled is None:
            compiled = self._local.compiled = _interpreter(self.source, self.data)
        return compiled

    def evaluate(self, input_document: dict) -> dict:
        if not self.remembers:
            return self.query(input_document)
        key = json.dumps(input_document, sort_keys=True, separators=(",", ":"))
        decision = self._remembered.get(key)
        if decision is None:
            decision = self.query(input_document)
            if len(self._remembered) >= MAX_REMEMBERED:
                self._remembered.clear()
            self._remembered[key] = decision
        return dict(decision)

    def query(self, input_document: dict) -> dict:
        """One evaluation by the Rego engine, never remembered."""
        interpreter, bundle = self._compiled()
        try:
            interpreter.set_input(rego_safe(input_document))
            output = interpreter.query_bundle_entrypoint(bundle, ENTRYPOINT)
        except Exception as exc:
            raise PolicyError(rego_error_message(exc)) from exc
        text = str(output).strip()
        expressions = json.loads(text).get("expressions") if text and text != "undefined" else None
        value = expressions[0] if expressions else None
        if not isinstance(value, dict) or value.get("result") not in ("allow", "deny", "hold"):
            raise PolicyError("the policy did not produce a decision (data.mandate.gate.decision)")
        return value
