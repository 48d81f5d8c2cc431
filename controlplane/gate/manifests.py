"""Action manifests: the YAML an operator writes, validated whole or refused.

A manifest is checked against ``MANIFEST_SCHEMA`` (types, enums, bounds, unknown fields)
and then by the rules that span fields (``manifest_rules.py``). Every problem names the file
and the field; a manifest with any problem is not loaded at all. ``Manifest`` is the value
object the gate reads (docs/gate.md).
"""

import copy
import hashlib
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import jsonschema
import rfc8785
import yaml
from jsonschema.validators import validator_for

from controlplane.choices import EgressProfile
from controlplane.gate.manifest_rules import (
    BUILTIN_FS,
    BUILTIN_HTTP,
    BUILTINS,
    PLACEHOLDER_NAME,
    Checks,
    json_path,
    placeholders,
    schema_problems,
    with_defaults,
)
from controlplane.gate.quick_schema import quick_check

__all__ = ["BUILTIN_FS", "BUILTIN_HTTP", "Manifest", "ManifestError", "Trust", "parse_manifest", "wire_form"]

MAX_MANIFEST_BYTES = 256 * 1024


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

    @cached_property
    def request_quick_check(self):
        """The request schema as a plain predicate, when it is of the common kind (``quick_schema``)."""
        validator = self.request_validator
        if validator is None:
            return None
        return quick_check(self.io.request_schema, asserts_formats=validator.format_checker is not None)

    def request_problem(self, body) -> str | None:
        """Why ``body`` does not match the request schema (``field: message``), or None."""
        if not isinstance(body, dict):
            return "the request body must be a JSON object"
        quick = self.request_quick_check
        if quick is not None and quick(body):
            return None  # what jsonschema would find too: nothing
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
    where = json_path(error.absolute_path)
    return f"{where}: {error.message}" if where else error.message


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
    return read_manifest_bytes(data, source)


def read_manifest_bytes(data: bytes, source: str) -> dict:
    """The YAML document in ``data`` (one mapping), or ManifestError."""
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


def document_hash(document: dict) -> str:
    return "sha256:" + hashlib.sha256(rfc8785.dumps(document)).hexdigest()


def parse_manifest(raw: dict, *, source: str) -> Manifest:
    """The manifest in ``raw`` (a parsed YAML/JSON document), or ManifestError naming
    ``source`` and each field at fault."""
    if not isinstance(raw, dict):
        raise ManifestError.one(source, "", "must be a mapping")
    problems = schema_problems(raw)
    if problems:
        raise ManifestError([(source, name, message) for name, message in problems])
    document = with_defaults(raw)
    problems = Checks(document).run()
    if problems:
        raise ManifestError([(source, name, message) for name, message in problems])
    return _build(document, source, raw)


def _build(d: dict, source: str, raw: dict) -> Manifest:
    template = None
    if d["template"] is not None:
        t = d["template"]
        names = {
            PLACEHOLDER_NAME.match(raw).group(1)
            for raw in placeholders([t["url_template"], t["headers"], t["body_template"]])
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
