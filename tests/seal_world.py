"""A run to seal, and the edits a forger would make to a seal.svg (tests/test_seal_*.py)."""

import json
import re
from datetime import UTC, datetime

from evidence.seals import issue_seal
from evidence.seals.svg import render_seal

RUN = {
    "principal": "alice@example.com",
    "entitlement_id": "ent_01J9ZQ4ACME000042",
    "run_id": "run_2026_05_01_nightly_0007",
    "inputs_sha256": "sha256:" + "3f2a9c1d7e4b" * 5 + "a0c2",
    "run_manifest_sha256": "9e1f" * 16,
    "outputs_sha256": "c0ffee" * 10 + "beef",
    "container_image": "ghcr.io/acme/trainer@sha256:" + "ab" * 32,
    "project_id": "acme-research-prod",
}
ISSUED_AT = datetime(2026, 5, 1, 12, 34, 56, 789000, tzinfo=UTC)


def issue(**overrides):
    return issue_seal(**{**RUN, "issued_at": ISSUED_AT, **overrides})


def metadata(svg: str, name: str) -> str:
    """The text of ``<seal:name>`` as written (XML-escaped)."""
    return re.search(rf"<seal:{name}[^>]*>(.*?)</seal:{name}>", svg, re.S).group(1)


def replace_metadata(svg: str, name: str, text: str) -> str:
    old = metadata(svg, name)
    return svg.replace(f">{old}</seal:{name}>", f">{text}</seal:{name}>", 1)


def with_payload(svg: str, **changes) -> str:
    """The seal with its metadata payload edited (canonical form kept), the picture untouched."""
    payload = {**json.loads(metadata(svg, "payload")), **changes}
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    return replace_metadata(svg, "payload", text)


def redrawn(bundle, **changes) -> str:
    """A forger's seal: the payload edited and the whole picture drawn again for it, keeping the
    original signature (only the signature can tell)."""
    return render_seal({**bundle.seal_json, **changes}, bundle.seal_sig)


def ring_tick(svg: str, index: int) -> str:
    """The element drawing tick ``index`` of the ring."""
    angle = f"{index * 360 / 128:.4f}".rstrip("0").rstrip(".")
    pattern = rf'<use href="#tick-[01]-[0-9a-f]+" transform="rotate\({re.escape(angle)} 270 266\)"/>'
    return re.search(pattern, svg).group(0)


def flip_ring_tick(svg: str, index: int) -> str:
    tick = ring_tick(svg, index)
    flipped = tick.replace("#tick-1-", "#tick-0-") if "#tick-1-" in tick else tick.replace("#tick-0-", "#tick-1-")
    return svg.replace(tick, flipped, 1)


def barcode_bars(svg: str) -> list[str]:
    band = svg[svg.index('data-seal="barcode"') :]
    return re.findall(r'<rect x="\d+" y="528" width="\d+" height="42"/>', band)
