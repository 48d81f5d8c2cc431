"""The rules a manifest must follow beyond its JSON Schema's shape (docs/gate.md,
"Manifests"): defaults, provider kinds, schemas that are JSON Schemas, placeholders that
name request properties, side effects that cover what the provider does, domains and globs.
Each problem is a (field, message) pair; ``manifests.parse_manifest`` names the file."""

import copy
import re

import jsonschema
from jsonschema.validators import validator_for

from controlplane.choices import EgressProfile, SideEffect, VerifierKind
from controlplane.gate.manifest_schema import (
    DEFAULT_IO,
    DEFAULT_MAX_FILE_BYTES,
    DEFAULT_REQUIRED_SCOPES,
    DEFAULT_RESOURCE_LIMITS,
    IMPORT_ALIASES,
    MANIFEST_SCHEMA,
)
from controlplane.gate.targets import TargetError, validate_glob, validate_manifest_domain

BUILTIN_HTTP = "builtin:http_api"
BUILTIN_FS = "builtin:fs"
BUILTINS = (BUILTIN_HTTP, BUILTIN_FS)
DIGEST = re.compile(r"\Asha256:[0-9a-f]{64}\Z")

PLACEHOLDER = re.compile(r"\{\{(.*?)\}\}")
PLACEHOLDER_NAME = re.compile(r"\A\s*((?:secret\.)?[A-Za-z_][A-Za-z0-9_]*)\s*\Z")

METHOD_EFFECT = {
    "GET": SideEffect.HTTP_READ,
    "HEAD": SideEffect.HTTP_READ,
    "POST": SideEffect.HTTP_WRITE,
    "PUT": SideEffect.HTTP_WRITE,
    "PATCH": SideEffect.HTTP_WRITE,
    "DELETE": SideEffect.HTTP_DELETE,
}
OPERATION_EFFECT = {
    "read": SideEffect.FS_READ,
    "list": SideEffect.FS_READ,
    "create": SideEffect.FS_WRITE,
    "overwrite": SideEffect.FS_WRITE,
    "delete": SideEffect.FS_DELETE,
}
HTTP_EFFECTS = frozenset({SideEffect.HTTP_READ, SideEffect.HTTP_WRITE, SideEffect.HTTP_DELETE})
VERIFICATION_KEYS = {
    VerifierKind.HTTP_STATUS: {"expected_status", "required_fields"},
    VerifierKind.FS_HASH: set(),
    VerifierKind.NONE: set(),
}
# Headers the HTTP client owns: a template setting them could smuggle a second request.
RESERVED_HEADERS = frozenset({"host", "content-length", "transfer-encoding", "connection", "upgrade", "te"})


def json_path(parts) -> str:
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


_MANIFEST_VALIDATOR = jsonschema.Draft202012Validator(MANIFEST_SCHEMA)


def schema_problems(document: dict) -> list[tuple[str, str]]:
    problems = []
    for error in sorted(_MANIFEST_VALIDATOR.iter_errors(document), key=lambda e: [str(p) for p in e.absolute_path]):
        where = json_path(error.absolute_path)
        if error.validator == "required":
            missing = re.match(r"'([^']+)'", error.message)
            name = missing.group(1) if missing else ""
            problems.append((f"{where}.{name}" if where else name, "is required"))
        elif error.validator == "additionalProperties":
            extras = sorted(set(error.instance) - set(error.schema.get("properties", {})))
            for extra in extras:
                problems.append((f"{where}.{extra}" if where else str(extra), "is not a manifest field"))
        else:
            problems.append((where, error.message))
    return problems


def with_defaults(raw: dict) -> dict:
    document = copy.deepcopy(raw)
    document["required_imports"] = sorted({IMPORT_ALIASES.get(name, name) for name in raw.get("required_imports", [])})
    document["resource_limits"] = {**DEFAULT_RESOURCE_LIMITS, **raw.get("resource_limits", {})}
    io = {**DEFAULT_IO, **raw.get("io", {})}
    io.setdefault("request_schema", None)
    io.setdefault("response_schema", None)
    document["io"] = io
    egress = {
        "profile": EgressProfile.NONE.value,
        "allowed_domains": [],
        "allowed_methods": [],
        **raw.get("egress", {}),
    }
    document["egress"] = egress
    document["secrets"] = [{"name": s["name"], "required": s.get("required", True)} for s in raw.get("secrets", [])]
    document.setdefault("declared_side_effects", [])
    document.setdefault("required_scopes", list(DEFAULT_REQUIRED_SCOPES))
    document.setdefault("verifier_kind", VerifierKind.NONE.value)
    document.setdefault("verification_config", {})
    document.setdefault("template", None)
    document.setdefault("description", "")
    document.setdefault("module", None)
    document.setdefault("tags", [])
    if raw.get("fs") is not None:
        document["fs"] = {
            "allowed_paths": [],
            "denied_paths": [],
            "max_file_bytes": DEFAULT_MAX_FILE_BYTES,
            **raw["fs"],
        }
    else:
        document["fs"] = None
    if document["template"] is not None:
        document["template"] = {"headers": {}, "body_template": None, **document["template"]}
        if not egress["allowed_methods"]:
            egress["allowed_methods"] = [document["template"]["method"]]
    return document


def placeholders(value) -> list[str]:
    """Every ``{{...}}`` inside a string, or inside the strings of an object."""
    if isinstance(value, str):
        return PLACEHOLDER.findall(value)
    if isinstance(value, dict):
        return [found for item in value.values() for found in placeholders(item)]
    if isinstance(value, list):
        return [found for item in value for found in placeholders(item)]
    return []


class Checks:
    """The rules that span fields; each adds (field, message) to ``problems``."""

    def __init__(self, document: dict):
        self.d = document
        self.problems: list[tuple[str, str]] = []

    def problem(self, name: str, message: str) -> None:
        self.problems.append((name, message))

    def run(self) -> list[tuple[str, str]]:
        self.provider()
        self.schemas()
        self.template()
        self.egress()
        self.fs()
        self.side_effects()
        self.verifier()
        self.secrets()
        return self.problems

    def provider(self):
        digest = self.d["provider_module_digest"]
        if digest.startswith("builtin:"):
            if digest not in BUILTINS:
                self.problem("provider_module_digest", f"unknown builtin '{digest}' (builtin:http_api or builtin:fs)")
                return
            if self.d["module"] is not None:
                self.problem("module", "only a sha256: provider runs a module")
        elif not DIGEST.match(digest):
            self.problem(
                "provider_module_digest",
                f"must be 'sha256:' and 64 lower-case hex digits, or builtin:http_api / builtin:fs (got '{digest}')",
            )
            return
        elif self.d["module"] is not None:
            try:
                module = validate_glob(self.d["module"])
            except TargetError as exc:
                self.problem("module", str(exc))
            else:
                if not module.endswith(".wasm") or any(ch in module for ch in "*?["):
                    self.problem("module", "must be the path of a .wasm file under the actions directory")
                self.d["module"] = module
        kind = digest if digest in BUILTINS else "wasm"
        if kind == BUILTIN_HTTP and self.d["template"] is None:
            self.problem("template", "is required for builtin:http_api")
        if kind != BUILTIN_HTTP and self.d["template"] is not None:
            self.problem("template", "only builtin:http_api renders a template")
        if kind == BUILTIN_FS and self.d["fs"] is None:
            self.problem("fs", "is required for builtin:fs")
        if kind != BUILTIN_FS and self.d["fs"] is not None:
            self.problem("fs", "only builtin:fs reads and writes files")

    def schemas(self):
        for name in ("request_schema", "response_schema"):
            schema = self.d["io"][name]
            if schema is None:
                continue
            try:
                validator_for(schema, default=jsonschema.Draft202012Validator).check_schema(schema)
            except jsonschema.SchemaError as exc:
                where = json_path(exc.absolute_path)
                self.problem(
                    f"io.{name}" + (f".{where}" if where else ""), f"is not a valid JSON Schema: {exc.message}"
                )
                continue
            if schema.get("type") != "object":
                self.problem(f"io.{name}.type", "must be 'object' (bodies and outputs are JSON objects)")

    def template(self):
        template = self.d["template"]
        if template is None:
            return
        schema = self.d["io"]["request_schema"] or {}
        properties = schema.get("properties", {}) if isinstance(schema, dict) else {}
        required = set(schema.get("required", [])) if isinstance(schema, dict) else set()
        secrets = {secret["name"] for secret in self.d["secrets"]}
        places = [("template.url_template", template["url_template"])]
        places += [(f"template.headers.{name}", value) for name, value in template["headers"].items()]
        places.append(("template.body_template", template["body_template"]))
        for name in template["headers"]:
            if name.lower() in RESERVED_HEADERS:
                self.problem(f"template.headers.{name}", "is set by the HTTP client, not by a template")
        for where, value in places:
            for raw in placeholders(value):
                match = PLACEHOLDER_NAME.match(raw)
                if match is None:
                    self.problem(where, f"'{{{{{raw}}}}}' is not a placeholder ({{{{name}}}} or {{{{secret.NAME}}}})")
                    continue
                var = match.group(1)
                if var.startswith("secret."):
                    if var[7:] not in secrets:
                        self.problem(where, f"'{{{{{var}}}}}' names a secret the manifest does not declare")
                elif var not in properties:
                    self.problem(where, f"'{{{{{var}}}}}' is not a property of io.request_schema")
                elif where == "template.url_template" and var not in required:
                    self.problem(where, f"'{{{{{var}}}}}' must be a required property of io.request_schema")
        if "{{" not in template["url_template"] and not template["url_template"].startswith(("http://", "https://")):
            self.problem("template.url_template", "must be an http(s) URL or start from a placeholder")

    def egress(self):
        egress = self.d["egress"]
        domains = []
        for index, domain in enumerate(egress["allowed_domains"]):
            try:
                domains.append(validate_manifest_domain(domain))
            except TargetError as exc:
                self.problem(f"egress.allowed_domains[{index}]", str(exc))
        egress["allowed_domains"] = sorted(set(domains))
        network = self.d["provider_module_digest"] == BUILTIN_HTTP or "mandate:http" in self.d["required_imports"]
        if network and egress["profile"] != EgressProfile.PROXY_ALLOWLIST:
            self.problem("egress.profile", "must be proxy_allowlist for an action that makes HTTP calls")
        if not network and egress["profile"] != EgressProfile.NONE:
            self.problem("egress.profile", "must be none: the action makes no HTTP calls (declare mandate:http)")
        if not network and (egress["allowed_domains"] or egress["allowed_methods"]):
            self.problem("egress", "allowed_domains and allowed_methods need an action that makes HTTP calls")
        template = self.d["template"]
        if template is not None and template["method"] not in egress["allowed_methods"]:
            self.problem("egress.allowed_methods", f"must include the template's method {template['method']}")
        if self.d["provider_module_digest"] == BUILTIN_FS and "mandate:http" in self.d["required_imports"]:
            self.problem("required_imports", "builtin:fs makes no HTTP calls")

    def fs(self):
        rules = self.d["fs"]
        if rules is None:
            return
        for key in ("allowed_paths", "denied_paths"):
            normalized = []
            for index, glob in enumerate(rules[key]):
                try:
                    normalized.append(validate_glob(glob))
                except TargetError as exc:
                    self.problem(f"fs.{key}[{index}]", str(exc))
            rules[key] = normalized

    def side_effects(self):
        declared = set(self.d["declared_side_effects"])
        needed = {}
        if self.d["template"] is not None:
            method = self.d["template"]["method"]
            for allowed in self.d["egress"]["allowed_methods"]:
                needed.setdefault(METHOD_EFFECT[allowed], f"method {allowed}")
            needed.setdefault(METHOD_EFFECT[method], f"method {method}")
        if self.d["fs"] is not None:
            for operation in self.d["fs"]["allowed_operations"]:
                needed.setdefault(OPERATION_EFFECT[operation], f"operation {operation}")
        for effect, why in sorted(needed.items()):
            if effect not in declared:
                self.problem("declared_side_effects", f"must include {effect} ({why})")
        if "mandate:http" in self.d["required_imports"] and not declared & HTTP_EFFECTS:
            self.problem(
                "declared_side_effects", "must include an http_* effect for a module that imports mandate:http"
            )

    def verifier(self):
        kind = self.d["verifier_kind"]
        http = self.d["provider_module_digest"] == BUILTIN_HTTP or "mandate:http" in self.d["required_imports"]
        if kind == VerifierKind.HTTP_STATUS and not http:
            self.problem("verifier_kind", "http_status verifies HTTP calls; this action makes none")
        if kind == VerifierKind.FS_HASH and self.d["provider_module_digest"] != BUILTIN_FS:
            self.problem("verifier_kind", "fs_hash verifies builtin:fs actions only")
        config = self.d["verification_config"]
        for key in sorted(set(config) - VERIFICATION_KEYS[kind]):
            self.problem(f"verification_config.{key}", f"is not a setting of the {kind} verifier")
        if "expected_status" in config:
            statuses = config["expected_status"]
            if not (
                isinstance(statuses, list)
                and statuses
                and all(isinstance(s, int) and not isinstance(s, bool) and 100 <= s <= 599 for s in statuses)
            ):
                self.problem("verification_config.expected_status", "must be a non-empty list of HTTP statuses")
        if "required_fields" in config:
            fields = config["required_fields"]
            if not (isinstance(fields, list) and all(isinstance(f, str) and f for f in fields)):
                self.problem("verification_config.required_fields", "must be a list of field names")

    def secrets(self):
        seen = set()
        for index, secret in enumerate(self.d["secrets"]):
            if secret["name"] in seen:
                self.problem(f"secrets[{index}].name", f"'{secret['name']}' is declared twice")
            seen.add(secret["name"])
