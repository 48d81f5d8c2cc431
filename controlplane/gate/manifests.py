"""Action manifests: the YAML an operator writes, validated whole or refused.

A manifest is checked against ``MANIFEST_SCHEMA`` (types, enums, bounds, unknown fields)
and then by the rules that span fields (provider kinds, schemas that are JSON Schemas,
placeholders that name request properties, side effects that cover what the provider does,
domains and globs). Every problem names the file and the field; a manifest with any problem
is not loaded at all. ``Manifest`` is the value object the gate reads (docs/gate.md).
"""

import copy
import hashlib
import re
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import jsonschema
import rfc8785
import yaml
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
MAX_MANIFEST_BYTES = 256 * 1024

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


class ManifestError(ValueError):
    """Manifests that cannot be loaded: ``problems`` are (source, field, message)."""

    def __init__(self, problems: list[tuple[str, str, str]]):
        self.problems = problems
        super().__init__(
            "; ".join(
                f"{source}: {name}: {message}" if name else f"{source}: {message}" for source, name, message in problems
            )
        )

    @classmethod
    def one(cls, source: str, name: str, message: str) -> "ManifestError":
        return cls([(source, name, message)])


@dataclass(frozen=True)
class ResourceLimits:
    fuel: int
    memory_mb: int
    timeout_seconds: float
    max_io_calls: int
    max_host_response_bytes: int


@dataclass(frozen=True)
class Io:
    request_schema: dict | None
    response_schema: dict | None
    max_request_bytes: int
    max_response_bytes: int


@dataclass(frozen=True)
class Egress:
    profile: str
    allowed_domains: tuple[str, ...]
    allowed_methods: tuple[str, ...]


@dataclass(frozen=True)
class Secret:
    name: str
    required: bool


@dataclass(frozen=True, eq=False)
class Template:
    method: str
    url_template: str
    headers: tuple[tuple[str, str], ...]
    body_template: str | dict | None
    placeholders: frozenset[str]  # request properties and secret.NAME references used


@dataclass(frozen=True)
class FsRules:
    allowed_operations: tuple[str, ...]
    allowed_paths: tuple[str, ...]
    denied_paths: tuple[str, ...]
    max_file_bytes: int


class Trust:
    """Whether the code an action runs is the code its manifest names (set at load)."""

    BUILTIN = "builtin"
    DIGEST_OK = "digest_ok"
    DIGEST_MISMATCH = "digest_mismatch"  # the module's bytes hash to something else
    MODULE_MISSING = "module_missing"  # no module with the manifest's digest
    MODULE_INVALID = "module_invalid"  # the module's imports or exports break the convention
    UNCHECKED = "unchecked"


@dataclass(frozen=True, eq=False)
class Manifest:
    action_id: str
    version: str
    provider_module_digest: str
    required_imports: tuple[str, ...]
    resource_limits: ResourceLimits
    io: Io
    egress: Egress
    secrets: tuple[Secret, ...]
    risk_level: str
    declared_side_effects: tuple[str, ...]
    required_scopes: tuple[str, ...]
    verifier_kind: str
    verification_config: dict
    template: Template | None
    fs: FsRules | None
    description: str
    module: str | None  # the WASM module's path under the actions directory, if named
    document: dict  # the validated manifest with its defaults filled in
    document_hash: str
    raw: dict  # the manifest as written (what the catalogue stores and re-parses)
    source: str
    trust: str = Trust.UNCHECKED
    module_bytes: bytes | None = field(default=None, repr=False)  # exactly the bytes hashed

    @property
    def digest_ok(self) -> bool:
        return self.trust in (Trust.BUILTIN, Trust.DIGEST_OK)

    @property
    def is_builtin(self) -> bool:
        return self.provider_module_digest in BUILTINS

    @property
    def provider(self) -> str:
        """``http_api``, ``fs`` or ``wasm``."""
        return self.provider_module_digest.split(":", 1)[1] if self.is_builtin else "wasm"

    @property
    def secret_names(self) -> tuple[str, ...]:
        return tuple(secret.name for secret in self.secrets)

    @cached_property
    def request_validator(self):
        """A compiled validator of request bodies (None: any JSON object)."""
        schema = self.io.request_schema
        return None if schema is None else validator_for(schema, default=jsonschema.Draft202012Validator)(schema)

    @cached_property
    def response_validator(self):
        schema = self.io.response_schema
        return None if schema is None else validator_for(schema, default=jsonschema.Draft202012Validator)(schema)

    def request_problem(self, body) -> str | None:
        """Why ``body`` does not match the request schema (``field: message``), or None."""
        if not isinstance(body, dict):
            return "the request body must be a JSON object"
        return _first_problem(self.request_validator, body)

    def response_problem(self, output) -> str | None:
        return _first_problem(self.response_validator, output)

    def summary(self) -> dict:
        """``GET /v1/actions``'s entry."""
        return {
            "action_id": self.action_id,
            "version": self.version,
            "risk_level": self.risk_level,
            "description": self.description,
            "database_mode": None,
        }


def _first_problem(validator, value) -> str | None:
    if validator is None:
        return None
    error = jsonschema.exceptions.best_match(validator.iter_errors(value))
    if error is None:
        return None
    where = _json_path(error.absolute_path)
    return f"{where}: {error.message}" if where else error.message


def _json_path(parts) -> str:
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


# --- reading files -------------------------------------------------------------------------


class _StrictLoader(yaml.SafeLoader):
    """Safe YAML that refuses a key written twice in one mapping (YAML keeps the last)."""


def _construct_mapping(loader, node, deep=False):
    seen = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def read_manifest_file(path: Path, source: str) -> dict:
    """The YAML document in ``path`` (one mapping), or ManifestError."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ManifestError.one(source, "", f"cannot be read ({exc.strerror})") from exc
    if len(data) > MAX_MANIFEST_BYTES:
        raise ManifestError.one(source, "", f"is larger than {MAX_MANIFEST_BYTES} bytes")
    try:
        document = yaml.load(data.decode("utf-8"), Loader=_StrictLoader)  # noqa: S506 (a SafeLoader)
    except UnicodeDecodeError as exc:
        raise ManifestError.one(source, "", "is not UTF-8") from exc
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ManifestError.one(source, "", f"is not valid YAML{where}: {problem}") from exc
    if not isinstance(document, dict):
        raise ManifestError.one(source, "", "must be a YAML mapping (one manifest per file)")
    return document


# --- validation ----------------------------------------------------------------------------

_MANIFEST_VALIDATOR = jsonschema.Draft202012Validator(MANIFEST_SCHEMA)


def _schema_problems(document: dict) -> list[tuple[str, str]]:
    problems = []
    for error in sorted(_MANIFEST_VALIDATOR.iter_errors(document), key=lambda e: [str(p) for p in e.absolute_path]):
        where = _json_path(error.absolute_path)
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


def _with_defaults(raw: dict) -> dict:
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


def _placeholders(value) -> list[str]:
    """Every ``{{...}}`` inside a string, or inside the strings of an object."""
    if isinstance(value, str):
        return PLACEHOLDER.findall(value)
    if isinstance(value, dict):
        return [found for item in value.values() for found in _placeholders(item)]
    if isinstance(value, list):
        return [found for item in value for found in _placeholders(item)]
    return []


class _Checks:
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
                where = _json_path(exc.absolute_path)
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
            for raw in _placeholders(value):
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


def document_hash(document: dict) -> str:
    return "sha256:" + hashlib.sha256(rfc8785.dumps(document)).hexdigest()


def parse_manifest(raw: dict, *, source: str) -> Manifest:
    """The manifest in ``raw`` (a parsed YAML/JSON document), or ManifestError naming
    ``source`` and each field at fault."""
    if not isinstance(raw, dict):
        raise ManifestError.one(source, "", "must be a mapping")
    problems = _schema_problems(raw)
    if problems:
        raise ManifestError([(source, name, message) for name, message in problems])
    document = _with_defaults(raw)
    problems = _Checks(document).run()
    if problems:
        raise ManifestError([(source, name, message) for name, message in problems])
    return _build(document, source, raw)


def _build(d: dict, source: str, raw: dict) -> Manifest:
    template = None
    if d["template"] is not None:
        t = d["template"]
        names = {
            PLACEHOLDER_NAME.match(raw).group(1)
            for raw in _placeholders([t["url_template"], t["headers"], t["body_template"]])
        }
        template = Template(
            t["method"], t["url_template"], tuple(sorted(t["headers"].items())), t["body_template"], frozenset(names)
        )
    fs = None
    if d["fs"] is not None:
        f = d["fs"]
        fs = FsRules(
            tuple(f["allowed_operations"]), tuple(f["allowed_paths"]), tuple(f["denied_paths"]), f["max_file_bytes"]
        )
    io, egress, limits = d["io"], d["egress"], d["resource_limits"]
    return Manifest(
        action_id=d["action_id"],
        version=d["version"],
        provider_module_digest=d["provider_module_digest"],
        required_imports=tuple(d["required_imports"]),
        resource_limits=ResourceLimits(**limits),
        io=Io(io["request_schema"], io["response_schema"], io["max_request_bytes"], io["max_response_bytes"]),
        egress=Egress(egress["profile"], tuple(egress["allowed_domains"]), tuple(egress["allowed_methods"])),
        secrets=tuple(Secret(s["name"], s["required"]) for s in d["secrets"]),
        risk_level=d["risk_level"],
        declared_side_effects=tuple(sorted(d["declared_side_effects"])),
        required_scopes=tuple(d["required_scopes"]),
        verifier_kind=d["verifier_kind"],
        verification_config=d["verification_config"],
        template=template,
        fs=fs,
        description=d["description"],
        module=d["module"],
        document=d,
        document_hash=document_hash(d),
        raw=copy.deepcopy(raw),
        source=source,
    )


def wire_form(manifest: Manifest) -> dict:
    """``GET /v1/actions/{id}``: the manifest as JSON, in LatchGate's shapes (egress as
    ``{profile, proxy_allowlist: {allowed_domains}}``; secrets by name, never a value; no
    file paths)."""
    d = manifest.document
    egress = {"profile": manifest.egress.profile}
    if manifest.egress.profile == EgressProfile.PROXY_ALLOWLIST:
        egress["proxy_allowlist"] = {"allowed_domains": list(manifest.egress.allowed_domains)}
        egress["allowed_methods"] = list(manifest.egress.allowed_methods)
    body = {
        "action_id": manifest.action_id,
        "version": manifest.version,
        "description": manifest.description,
        "provider_module_digest": manifest.provider_module_digest,
        "required_imports": list(manifest.required_imports),
        "resource_limits": dict(d["resource_limits"]),
        "io": dict(d["io"]),
        "egress": egress,
        "secrets": [{"name": s.name, "required": s.required} for s in manifest.secrets],
        "risk_level": manifest.risk_level,
        "declared_side_effects": list(manifest.declared_side_effects),
        "required_scopes": list(manifest.required_scopes),
        "verifier_kind": manifest.verifier_kind,
        "verification_config": manifest.verification_config,
        "template": d["template"],
        "fs": d["fs"],
        "database_mode": None,
    }
    return body
