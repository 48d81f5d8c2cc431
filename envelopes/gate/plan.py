"""The execution plan: everything a provider needs to run one action, frozen.

The pipeline builds it from the active manifest (plus learned domains and paths), a held
action stores it (``to_dict``) with its ``plan_hash``, and approval re-reads it
(``from_dict``), checks the hash and executes exactly that plan — never the live manifest.
Nested JSON values (template body, verification config) are deep-frozen so nothing can
change a plan after it was hashed.
"""

import dataclasses
import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import rfc8785

BUILTIN_HTTP = "builtin:http_api"
BUILTIN_FS = "builtin:fs"

DEFAULT_FUEL = 1_000_000
DEFAULT_MEMORY_MB = 64
DEFAULT_TIMEOUT_SECONDS = 10
DEFAULT_MAX_IO_CALLS = 10
DEFAULT_MAX_REQUEST_BYTES = 64 * 1024
DEFAULT_MAX_RESPONSE_BYTES = 1024 * 1024
DEFAULT_MAX_FILE_BYTES = 10 * 1024 * 1024

# Which HTTP methods a declared side effect stands for (allowed_methods when a manifest has none).
METHODS_BY_EFFECT = {
    "http_read": ("GET", "HEAD"),
    "http_write": ("POST", "PUT", "PATCH"),
    "http_delete": ("DELETE",),
}


def freeze(value: Any) -> Any:
    """A JSON value that cannot be changed: objects become read-only mappings, arrays tuples."""
    if isinstance(value, Mapping):
        return MappingProxyType({str(k): freeze(v) for k, v in value.items()})
    if isinstance(value, list | tuple):
        return tuple(freeze(v) for v in value)
    return value


def thaw(value: Any) -> Any:
    """The plain JSON form of a frozen value (dicts and lists)."""
    if isinstance(value, Mapping):
        return {k: thaw(v) for k, v in value.items()}
    if isinstance(value, tuple | list):
        return [thaw(v) for v in value]
    return value


def _strings(value: Any, name: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str) or not isinstance(value, Iterable):
        raise ValueError(f"{name} must be a list of strings")
    items = tuple(value)
    if not all(isinstance(item, str) for item in items):
        raise ValueError(f"{name} must be a list of strings")
    return items


def _number(value: Any, name: str, *, integer: bool = True, zero: bool = False) -> int | float:
    kinds = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds) or value < 0 or (value == 0 and not zero):
        raise ValueError(
            f"{name} must be a {'non-negative' if zero else 'positive'} {'integer' if integer else 'number'}"
        )
    return value


def _only(data: Mapping, allowed: set[str], name: str) -> None:
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise ValueError(f"{name}: unknown field {unknown[0]!r}")


@dataclass(frozen=True)
class Template:
    method: str
    url_template: str
    headers: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    body_template: Any = None  # a JSON value (frozen) or None

    @classmethod
    def from_dict(cls, data: Mapping) -> "Template":
        _only(data, {"method", "url_template", "headers", "body_template"}, "template")
        method, url = data.get("method"), data.get("url_template")
        if not isinstance(method, str) or not method or not isinstance(url, str) or not url:
            raise ValueError("template needs a method and a url_template")
        headers = data.get("headers") or {}
        if not isinstance(headers, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in headers.items()
        ):
            raise ValueError("template.headers must map names to strings")
        return cls(method.upper(), url, freeze(headers), freeze(data.get("body_template")))

    def to_dict(self) -> dict:
        return {
            "method": self.method,
            "url_template": self.url_template,
            "headers": thaw(self.headers),
            "body_template": thaw(self.body_template),
        }


@dataclass(frozen=True)
class Egress:
    profile: str = "none"  # none | proxy_allowlist
    allowed_domains: tuple[str, ...] = ()
    allowed_methods: tuple[str, ...] = ()

    @classmethod
    def from_dict(cls, data: Mapping) -> "Egress":
        _only(data, {"profile", "allowed_domains", "allowed_methods"}, "egress")
        profile = data.get("profile", "none")
        if profile not in ("none", "proxy_allowlist"):
            raise ValueError("egress.profile must be none or proxy_allowlist")
        domains = tuple(
            d.strip().lower().rstrip(".") for d in _strings(data.get("allowed_domains"), "egress.allowed_domains")
        )
        methods = tuple(m.upper() for m in _strings(data.get("allowed_methods"), "egress.allowed_methods"))
        return cls(profile, domains, methods)

    def to_dict(self) -> dict:
        return {
            "profile": self.profile,
            "allowed_domains": list(self.allowed_domains),
            "allowed_methods": list(self.allowed_methods),
        }


@dataclass(frozen=True)
class FsRules:
    allowed_operations: tuple[str, ...] = ()
    allowed_paths: tuple[str, ...] = ()
    denied_paths: tuple[str, ...] = ()
    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES

    @classmethod
    def from_dict(cls, data: Mapping) -> "FsRules":
        _only(data, {"allowed_operations", "allowed_paths", "denied_paths", "max_file_bytes"}, "fs")
        return cls(
            _strings(data.get("allowed_operations"), "fs.allowed_operations"),
            _strings(data.get("allowed_paths"), "fs.allowed_paths"),
            _strings(data.get("denied_paths"), "fs.denied_paths"),
            _number(data.get("max_file_bytes", DEFAULT_MAX_FILE_BYTES), "fs.max_file_bytes"),
        )

    def to_dict(self) -> dict:
        return {
            "allowed_operations": list(self.allowed_operations),
            "allowed_paths": list(self.allowed_paths),
            "denied_paths": list(self.denied_paths),
            "max_file_bytes": self.max_file_bytes,
        }


@dataclass(frozen=True)
class ResourceLimits:
    fuel: int = DEFAULT_FUEL
    memory_mb: int = DEFAULT_MEMORY_MB
    timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS
    max_io_calls: int = DEFAULT_MAX_IO_CALLS

    @classmethod
    def from_dict(cls, data: Mapping) -> "ResourceLimits":
        # LatchGate manifests may carry max_host_response_bytes here; io.max_response_bytes rules.
        known = {"fuel", "memory_mb", "timeout_seconds", "max_io_calls", "max_host_response_bytes"}
        _only(data, known, "resource_limits")
        return cls(
            _number(data.get("fuel", DEFAULT_FUEL), "resource_limits.fuel"),
            _number(data.get("memory_mb", DEFAULT_MEMORY_MB), "resource_limits.memory_mb"),
            _number(data.get("timeout_seconds", DEFAULT_TIMEOUT_SECONDS), "timeout_seconds", integer=False),
            # 0: a module that makes no host I/O call (the catalogue allows it; echo_wasm says so)
            _number(data.get("max_io_calls", DEFAULT_MAX_IO_CALLS), "resource_limits.max_io_calls", zero=True),
        )

    def to_dict(self) -> dict:
        return {
            "fuel": self.fuel,
            "memory_mb": self.memory_mb,
            "timeout_seconds": self.timeout_seconds,
            "max_io_calls": self.max_io_calls,
        }


@dataclass(frozen=True)
class IoLimits:
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES
    max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES

    @classmethod
    def from_dict(cls, data: Mapping) -> "IoLimits":
        # A manifest's io also holds the schemas; the pipeline checks those, the plan keeps the limits.
        return cls(
            _number(data.get("max_request_bytes", DEFAULT_MAX_REQUEST_BYTES), "io.max_request_bytes"),
            _number(data.get("max_response_bytes", DEFAULT_MAX_RESPONSE_BYTES), "io.max_response_bytes"),
        )

    def to_dict(self) -> dict:
        return {"max_request_bytes": self.max_request_bytes, "max_response_bytes": self.max_response_bytes}


@dataclass(frozen=True)
class SecretRef:
    name: str
    required: bool = True

    @classmethod
    def parse(cls, item: Any) -> "SecretRef":
        if isinstance(item, str):
            return cls(item)
        if isinstance(item, Mapping) and isinstance(item.get("name"), str):
            return cls(item["name"], bool(item.get("required", True)))
        raise ValueError("secrets must be names or {name, required}")


PLAN_FIELDS = {
    "action_id",
    "version",
    "provider_module_digest",
    "template",
    "egress",
    "fs",
    "resource_limits",
    "io",
    "secrets",
    "verifier_kind",
    "verification_config",
    "declared_side_effects",
    "required_imports",
}


@dataclass(frozen=True)
class ExecutionPlan:
    action_id: str
    version: str
    provider_module_digest: str
    template: Template | None = None
    egress: Egress = Egress()
    fs: FsRules = FsRules()
    resource_limits: ResourceLimits = ResourceLimits()
    io: IoLimits = IoLimits()
    secrets: tuple[SecretRef, ...] = ()
    verifier_kind: str = "none"
    verification_config: Any = None  # frozen JSON value
    declared_side_effects: tuple[str, ...] = ()
    required_imports: tuple[str, ...] = ()

    def __hash__(self) -> int:
        return hash(self.plan_hash())

    @property
    def secret_names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.secrets)

    def to_dict(self) -> dict:
        return {
            "action_id": self.action_id,
            "version": self.version,
            "provider_module_digest": self.provider_module_digest,
            "template": self.template.to_dict() if self.template else None,
            "egress": self.egress.to_dict(),
            "fs": self.fs.to_dict(),
            "resource_limits": self.resource_limits.to_dict(),
            "io": self.io.to_dict(),
            "secrets": [{"name": s.name, "required": s.required} for s in self.secrets],
            "verifier_kind": self.verifier_kind,
            "verification_config": thaw(self.verification_config),
            "declared_side_effects": list(self.declared_side_effects),
            "required_imports": list(self.required_imports),
        }

    def plan_hash(self) -> str:
        """``sha256:`` + hex SHA-256 of the plan's RFC 8785 form (computed once per plan)."""
        cached = self.__dict__.get("_plan_hash")
        if cached is None:
            cached = "sha256:" + hashlib.sha256(rfc8785.dumps(self.to_dict())).hexdigest()
            object.__setattr__(self, "_plan_hash", cached)
        return cached

    @classmethod
    def from_dict(cls, data: Mapping) -> "ExecutionPlan":
        """A stored plan (the output of ``to_dict``); unknown fields are refused (ValueError)."""
        _only(data, PLAN_FIELDS, "plan")
        return cls._build(data, egress=data.get("egress") or {}, derive_methods=False)

    @classmethod
    def from_manifest(
        cls,
        manifest: Mapping,
        *,
        allowed_domains: Iterable[str] | None = None,
        allowed_paths: Iterable[str] | None = None,
    ) -> "ExecutionPlan":
        """The plan for a manifest (its mapping, YAML form, or a dataclass of the same fields;
        fields the plan does not need are ignored). ``allowed_domains`` / ``allowed_paths``
        replace the manifest's with the effective lists (manifest + learned) the caller merged."""
        if dataclasses.is_dataclass(manifest) and not isinstance(manifest, type):
            manifest = dataclasses.asdict(manifest)
        egress = dict(manifest.get("egress") or {})
        nested = egress.pop("proxy_allowlist", None)  # the SDK's wire form of the same list
        if isinstance(nested, Mapping) and "allowed_domains" not in egress:
            egress["allowed_domains"] = nested.get("allowed_domains")
        if allowed_domains is not None:
            egress["allowed_domains"] = list(allowed_domains)
        data = {k: manifest[k] for k in PLAN_FIELDS if k in manifest}
        if allowed_paths is not None:
            data["fs"] = {**(manifest.get("fs") or {}), "allowed_paths": list(allowed_paths)}
        return cls._build(data, egress=egress)

    @classmethod
    def _build(cls, data: Mapping, *, egress: Mapping, derive_methods: bool = True) -> "ExecutionPlan":
        action_id, version, digest = data.get("action_id"), data.get("version"), data.get("provider_module_digest")
        if not all(isinstance(v, str) and v for v in (action_id, version, digest)):
            raise ValueError("plan needs action_id, version and provider_module_digest")
        template = Template.from_dict(data["template"]) if data.get("template") else None
        effects = _strings(data.get("declared_side_effects"), "declared_side_effects")
        egress_rules = Egress.from_dict(egress)
        if derive_methods and not egress_rules.allowed_methods:
            # A manifest without allowed_methods may use the methods its side effects declare.
            implied = [m for effect in effects for m in METHODS_BY_EFFECT.get(effect, ())]
            if template:
                implied.append(template.method)
            egress_rules = Egress(egress_rules.profile, egress_rules.allowed_domains, tuple(dict.fromkeys(implied)))
        verifier_kind = data.get("verifier_kind") or "none"
        if not isinstance(verifier_kind, str):
            raise ValueError("verifier_kind must be a string")
        return cls(
            action_id=action_id,
            version=version,
            provider_module_digest=digest,
            template=template,
            egress=egress_rules,
            fs=FsRules.from_dict(data.get("fs") or {}),
            resource_limits=ResourceLimits.from_dict(data.get("resource_limits") or {}),
            io=IoLimits.from_dict(data.get("io") or {}),
            secrets=tuple(SecretRef.parse(s) for s in data.get("secrets") or ()),
            verifier_kind=verifier_kind,
            verification_config=freeze(data.get("verification_config")),
            declared_side_effects=effects,
            required_imports=_strings(data.get("required_imports"), "required_imports"),
        )
