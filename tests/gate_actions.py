"""Helpers for tests of the gate's catalogue: a copy of the shipped actions directory that a
test may change, and manifests written into it."""

import shutil
from pathlib import Path

import yaml
from django.conf import settings

SHIPPED = Path(settings.BASE_DIR) / "controlplane" / "gate" / "actions"


def copy_actions(tmp_path: Path) -> Path:
    target = tmp_path / "actions"
    shutil.copytree(SHIPPED, target)
    return target


def write_manifest(directory: Path, name: str, document: dict) -> Path:
    path = directory / name
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


def read_manifest(name: str) -> dict:
    return yaml.safe_load((SHIPPED / name).read_text())


def http_manifest(action_id="probe_get", **changes) -> dict:
    """A valid builtin:http_api manifest; ``changes`` replace top-level fields."""
    document = {
        "action_id": action_id,
        "version": "1.0.0",
        "provider_module_digest": "builtin:http_api",
        "template": {"method": "GET", "url_template": "{{url}}"},
        "io": {
            "request_schema": {
                "type": "object",
                "required": ["url"],
                "properties": {"url": {"type": "string"}},
            }
        },
        "egress": {"profile": "proxy_allowlist", "allowed_domains": ["api.example.com"]},
        "risk_level": "low",
        "declared_side_effects": ["http_read"],
    }
    document.update(changes)
    return document
