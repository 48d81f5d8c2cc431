"""The JSON Schema of an action manifest (the shape; ``manifests.py`` adds the rules that
span fields). Field list and defaults: docs/gate.md, "Manifests"."""

from controlplane.choices import ActionRisk, EgressProfile, FsOperation, SideEffect, VerifierKind

KIB = 1024
MIB = 1024 * KIB

HTTP_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"]
# The host imports a module may declare (LatchGate's names are accepted as aliases).
HOST_IMPORTS = ["mandate:log", "mandate:http", "mandate:fs"]
IMPORT_ALIASES = {
    "latchgate:io/log": "mandate:log",
    "latchgate:io/http": "mandate:http",
    "latchgate:io/fs": "mandate:fs",
}

DEFAULT_RESOURCE_LIMITS = {
    "fuel": 10_000_000,
    "memory_mb": 64,
    "timeout_seconds": 10,
    "max_io_calls": 10,
    "max_host_response_bytes": MIB,
}
DEFAULT_IO = {"max_request_bytes": 64 * KIB, "max_response_bytes": MIB}
DEFAULT_MAX_FILE_BYTES = 10 * MIB
DEFAULT_REQUIRED_SCOPES = ["tools:call"]


def _strings(**extra) -> dict:
    return {"type": "array", "items": {"type": "string", **extra}, "uniqueItems": True}


def _integer(minimum: int, maximum: int) -> dict:
    return {"type": "integer", "minimum": minimum, "maximum": maximum}


MANIFEST_SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "additionalProperties": False,
    "required": ["action_id", "version", "provider_module_digest", "risk_level"],
    "properties": {
        "action_id": {"type": "string", "pattern": r"^[a-zA-Z0-9][a-zA-Z0-9._-]*$", "maxLength": 128},
        "version": {"type": "string", "pattern": r"^[0-9A-Za-z][0-9A-Za-z.+-]*$", "maxLength": 64},
        "provider_module_digest": {"type": "string", "maxLength": 80},
        "module": {"type": "string", "maxLength": 1024},
        "description": {"type": "string", "maxLength": 2000},
        "tags": _strings(maxLength=64),
        "required_imports": _strings(enum=[*HOST_IMPORTS, *IMPORT_ALIASES]),
        "resource_limits": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "fuel": _integer(1, 10**12),
                "memory_mb": _integer(1, 4096),
                "timeout_seconds": {"type": "number", "exclusiveMinimum": 0, "maximum": 300},
                "max_io_calls": _integer(0, 10_000),
                "max_host_response_bytes": _integer(1, 64 * MIB),
            },
        },
        "io": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "request_schema": {"type": "object"},
                "response_schema": {"type": "object"},
                # The transport refuses bodies over 1 MiB before any action sees them.
                "max_request_bytes": _integer(1, MIB),
                "max_response_bytes": _integer(1, 64 * MIB),
            },
        },
        "egress": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "profile": {"enum": list(EgressProfile.values)},
                "allowed_domains": _strings(maxLength=253),
                "allowed_methods": _strings(enum=HTTP_METHODS),
            },
        },
        "secrets": {
            "type": "array",
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["name"],
                "properties": {
                    "name": {"type": "string", "pattern": r"^[A-Za-z_][A-Za-z0-9_]*$", "maxLength": 128},
                    "required": {"type": "boolean"},
                },
            },
        },
        "risk_level": {"enum": list(ActionRisk.values)},
        "declared_side_effects": _strings(enum=list(SideEffect.values)),
        "required_scopes": _strings(pattern=r"^[a-z][a-z0-9_-]*:[a-z0-9_:-]*[a-z0-9_-]$", maxLength=64),
        "verifier_kind": {"enum": list(VerifierKind.values)},
        "verification_config": {"type": "object"},
        "template": {
            "type": "object",
            "additionalProperties": False,
            "required": ["method", "url_template"],
            "properties": {
                "method": {"enum": HTTP_METHODS},
                "url_template": {"type": "string", "minLength": 1, "maxLength": 4096},
                "headers": {
                    "type": "object",
                    "propertyNames": {"pattern": r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$", "maxLength": 128},
                    "additionalProperties": {"type": "string", "maxLength": 8192},
                },
                "body_template": {"type": ["string", "object"]},
            },
        },
        "fs": {
            "type": "object",
            "additionalProperties": False,
            "required": ["allowed_operations"],
            "properties": {
                "allowed_operations": {**_strings(enum=list(FsOperation.values)), "minItems": 1},
                "allowed_paths": _strings(maxLength=1024),
                "denied_paths": _strings(maxLength=1024),
                "max_file_bytes": _integer(1, 1024 * MIB),
            },
        },
    },
}
