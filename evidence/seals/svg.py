"""The seal's picture: one SVG, the same bytes for the same payload and signature, drawn from
them alone (docs/seals.md "The picture").

A card with a round emblem on the left and the labels on the right. The emblem's outer ring
draws the seal id's 128 bits (a tall navy tick, ``#tick-1``, for 1, a short gold one,
``#tick-0``, for 0, clockwise from the gold pointer at twelve o'clock) around the seal id
written on a circular path; the band along the bottom draws the 256 bits of the barcode
digest (``payload.barcode_digest``) as 3-unit modules, dark for 1, between two guard
patterns. The signed payload, the signature and the kid travel in ``<metadata>``.

No trigonometry: every position is a rotation by an exact angle or a sum of integers, so any
machine re-renders the same text, which is what verification compares.
"""

from xml.sax.saxutils import escape

from evidence.seals.payload import barcode_digest, bits_of, canonical_json, ring_bits

SVG_NS = "http://www.w3.org/2000/svg"
SEAL_NS = "urn:mandate:seal:1"
FORMAT_VERSION = "1"
# Which group of the drawing is which: verification finds the ring and the barcode by it.
PART = "data-seal"
RING, BARCODE = "ring", "barcode"

WIDTH, HEIGHT = 960, 640
CX, CY = 270, 266  # the emblem's centre
NAVY, NAVY_DEEP, GOLD, GOLD_LIGHT, GOLD_DARK = "#1c2b4a", "#131e36", "#b08a3e", "#d9b96a", "#8a6a2a"
PAPER, EMBLEM_PAPER, MUTED, RULE = "#fbf8f1", "#f3ecda", "#6b6150", "#e6dcc6"
SERIF = "'DejaVu Serif', Georgia, 'Times New Roman', serif"
SANS = "'DejaVu Sans', 'Helvetica Neue', Arial, sans-serif"
MONO = "'DejaVu Sans Mono', Menlo, Consolas, monospace"

# The ring: 128 ticks, 2.8125 degrees apart (an exact binary fraction), hanging inwards from
# radius 228: 26 units long for a 1, 12 for a 0.
TICK_STEP = 360 / 128
TICK_OUTER, TICK_LONG, TICK_SHORT, TICK_WIDTH = 228, 26, 12, 5
# The barcode: 3-unit modules; guard patterns (1 0 1) at both ends, drawn taller.
MODULE, BAR_TOP, BAR_HEIGHT, GUARD_HEIGHT = 3, 528, 42, 50
GUARD = (1, 0, 1)


def render_seal(payload: dict, signature: str) -> str:
    """The SVG text for a checked payload (``payload.sealed_payload``) and its signature (base64)."""
    tag = payload["seal_id"][-12:]  # keeps the ids of two seals on one page apart
    lines = [
        '<?xml version="1.0" encoding="UTF-8"?>',
        f'<svg xmlns="{SVG_NS}" xmlns:seal="{SEAL_NS}" width="{WIDTH}" height="{HEIGHT}" '
        f'viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-labelledby="title-{tag} desc-{tag}">',
        f'  <title id="title-{tag}">Mandate seal {payload["seal_id"]}</title>',
        f'  <desc id="desc-{tag}">{_text(_description(payload))}</desc>',
        "  <metadata>",
        f'    <seal:seal version="{FORMAT_VERSION}">',
        f"      <seal:payload>{_text(canonical_json(payload).decode())}</seal:payload>",
        f'      <seal:signature algorithm="Ed25519" encoding="base64">{_text(signature)}</seal:signature>',
        f"      <seal:kid>{_text(payload['kid'])}</seal:kid>",
        "    </seal:seal>",
        "  </metadata>",
        *_defs(tag),
        *_card(),
        *_emblem(payload, tag),
        *_ring(payload, tag),
        *_labels(payload),
        *_barcode(payload),
        "</svg>",
        "",
    ]
    return "\n".join(lines)


def _description(payload: dict) -> str:
    return (
        f"Run {payload['run_id']} of {payload['principal']} under entitlement {payload['entitlement_id']}, "
        f"sealed {payload['issued_at']} with key {payload['kid']}. The signed payload, signature and kid "
        "are in this file's metadata; see docs/seals.md to verify it."
    )


def _defs(tag: str) -> list[str]:
    return [
        "  <defs>",
        f'    <radialGradient id="disc-{tag}" cx="50%" cy="38%" r="70%">',
        f'      <stop offset="0" stop-color="#2b3f69"/><stop offset="1" stop-color="{NAVY_DEEP}"/>',
        "    </radialGradient>",
        # The seal id reads along the top (clockwise), the maker's line along the bottom.
        f'    <path id="arc-top-{tag}" d="M {CX - 175} {CY} A 175 175 0 0 1 {CX + 175} {CY}"/>',
        f'    <path id="arc-bottom-{tag}" d="M {CX - 187} {CY} A 187 187 0 0 0 {CX + 187} {CY}"/>',
        "  </defs>",
    ]


def _card() -> list[str]:
    return [
        '  <g data-seal="card">',
        f'    <rect x="4" y="4" width="{WIDTH - 8}" height="{HEIGHT - 8}" rx="20" fill="{PAPER}" '
        f'stroke="{NAVY}" stroke-width="2"/>',
        f'    <rect x="14" y="14" width="{WIDTH - 28}" height="{HEIGHT - 28}" rx="12" fill="none" '
        f'stroke="{GOLD}" stroke-width="1"/>',
        "  </g>",
    ]


def _emblem(payload: dict, tag: str) -> list[str]:
    date, time = payload["issued_at"][:10], payload["issued_at"][11:19]
    rosette_y = CY - 60
    squares = "".join(
        f'<rect x="{CX - 30}" y="{rosette_y - 30}" width="60" height="60" '
        f'transform="rotate({angle} {CX} {rosette_y})"/>'
        for angle in ("0", "22.5", "45", "67.5")
    )
    return [
        '  <g data-seal="emblem">',
        f'    <circle cx="{CX}" cy="{CY}" r="238" fill="{EMBLEM_PAPER}" stroke="{NAVY}" stroke-width="3"/>',
        f'    <circle cx="{CX}" cy="{CY}" r="232" fill="none" stroke="{GOLD}" stroke-width="1.2"/>',
        f'    <circle cx="{CX}" cy="{CY}" r="196" fill="none" stroke="{GOLD}" stroke-width="1"/>',
        f'    <circle cx="{CX}" cy="{CY}" r="166" fill="none" stroke="{NAVY}" stroke-width="2"/>',
        f'    <circle cx="{CX}" cy="{CY}" r="161" fill="url(#disc-{tag})"/>',
        f'    <circle cx="{CX}" cy="{CY}" r="151" fill="none" stroke="{GOLD_LIGHT}" stroke-width="1" '
        'stroke-dasharray="2 4" opacity="0.8"/>',
        # The pointer the ring is read from, clockwise.
        f'    <path d="M {CX} {CY - 231} l -7 -12 h 14 z" fill="{GOLD}" stroke="{NAVY}" stroke-width="1"/>',
        f'    <path d="M {CX - 181} {CY - 6} l 6 6 l -6 6 l -6 -6 z" fill="{GOLD}"/>',
        f'    <path d="M {CX + 181} {CY - 6} l 6 6 l -6 6 l -6 -6 z" fill="{GOLD}"/>',
        f'    <text font-family="{SANS}" font-size="12.5" font-weight="bold" letter-spacing="3.2" '
        f'fill="{GOLD_DARK}" text-anchor="middle"><textPath href="#arc-bottom-{tag}" startOffset="50%">'
        "MANDATE \u00b7 SEALED RUN \u00b7 ED25519</textPath></text>",
        f'    <g fill="none" stroke="{GOLD_LIGHT}" stroke-width="1.1" opacity="0.9">{squares}</g>',
        f'    <circle cx="{CX}" cy="{rosette_y}" r="25" fill="{GOLD_LIGHT}" stroke="{GOLD}" stroke-width="1.5"/>',
        f'    <text x="{CX}" y="{rosette_y + 10}" font-family="{SERIF}" font-size="28" font-weight="bold" '
        f'fill="{NAVY}" text-anchor="middle">M</text>',
        f'    <text x="{CX}" y="{CY + 26}" font-family="{SERIF}" font-size="25" font-weight="bold" '
        f'letter-spacing="4" fill="{GOLD_LIGHT}" text-anchor="middle">SEALED RUN</text>',
        f'    <text x="{CX}" y="{CY + 56}" font-family="{MONO}" font-size="16" fill="{PAPER}" '
        f'text-anchor="middle">{date}</text>',
        f'    <text x="{CX}" y="{CY + 76}" font-family="{MONO}" font-size="12" fill="#aab4c8" '
        f'text-anchor="middle">{time} UTC</text>',
        f'    <text x="{CX}" y="{CY + 106}" font-family="{MONO}" font-size="11" fill="#c9d1e0" '
        f'text-anchor="middle">{_text(_short(payload["run_id"], 28))}</text>',
        "  </g>",
    ]


def _ring(payload: dict, tag: str) -> list[str]:
    tick = f'x="{_number(CX - TICK_WIDTH / 2)}" y="{CY - TICK_OUTER}" width="{TICK_WIDTH}" rx="1.2"'
    return [
        f'  <g {PART}="{RING}">',
        f'    <defs><rect id="tick-1-{tag}" {tick} height="{TICK_LONG}" fill="{NAVY}"/>'
        f'<rect id="tick-0-{tag}" {tick} height="{TICK_SHORT}" fill="{GOLD}"/></defs>',
        *(
            f'    <use href="#tick-{bit}-{tag}" transform="rotate({_number(index * TICK_STEP)} {CX} {CY})"/>'
            for index, bit in enumerate(ring_bits(payload["seal_id"]))
        ),
        f'    <text font-family="{MONO}" font-size="15" font-weight="bold" letter-spacing="1.2" fill="{NAVY}" '
        f'text-anchor="middle"><textPath href="#arc-top-{tag}" startOffset="50%">'
        f"{payload['seal_id']}</textPath></text>",
        "  </g>",
    ]


def _labels(payload: dict) -> list[str]:
    left, right, value_x = 548, 920, 662
    rows = [
        ("PRINCIPAL", _short(payload["principal"])),
        ("ENTITLEMENT", _short(payload["entitlement_id"])),
        ("RUN", _short(payload["run_id"])),
        ("PROJECT", _short(payload["project_id"])),
        ("IMAGE", _short(payload["container_image"])),
        ("INPUTS", _hash(payload["inputs_sha256"])),
        ("MANIFEST", _hash(payload["run_manifest_sha256"])),
        ("OUTPUTS", _hash(payload["outputs_sha256"])),
        ("ISSUED", payload["issued_at"]),
        ("SIGNED BY", _short(payload["kid"])),
    ]
    baselines = [158 + 34 * index for index in range(len(rows))]
    return [
        '  <g data-seal="labels">',
        f'    <text x="{left}" y="78" font-family="{SERIF}" font-size="30" fill="{NAVY}">Verifiable run seal</text>',
        f'    <text x="{left}" y="104" font-family="{MONO}" font-size="13" fill="{MUTED}">{payload["seal_id"]}</text>',
        f'    <line x1="{left}" y1="120" x2="{right}" y2="120" stroke="{GOLD}" stroke-width="1.5"/>',
        f'    <g font-family="{SANS}" font-size="10.5" letter-spacing="1.5" fill="{MUTED}">',
        *(f'      <text x="{left}" y="{y}">{label}</text>' for (label, _), y in zip(rows, baselines, strict=True)),
        "    </g>",
        f'    <g font-family="{MONO}" font-size="14" fill="{NAVY}">',
        *(
            f'      <text x="{value_x}" y="{y}">{_text(value)}</text>'
            for (_, value), y in zip(rows, baselines, strict=True)
        ),
        "    </g>",
        f'    <g stroke="{RULE}" stroke-width="1">',
        *(f'      <line x1="{left}" y1="{y + 13}" x2="{right}" y2="{y + 13}"/>' for y in baselines),
        "    </g>",
        "  </g>",
    ]


def _barcode(payload: dict) -> list[str]:
    digest = barcode_digest(payload)
    modules = list(GUARD) + bits_of(digest) + list(GUARD)
    left = (WIDTH - MODULE * len(modules)) // 2
    bars = _bars(modules)
    return [
        f'  <g {PART}="{BARCODE}">',
        f'    <g fill="{NAVY}">',
        *(
            f'      <rect x="{left + MODULE * begin}" y="{BAR_TOP}" width="{MODULE * (end - begin)}" '
            f'height="{height}"/>'
            for begin, end, height in bars
        ),
        "    </g>",
        f'    <text x="{WIDTH // 2}" y="600" font-family="{MONO}" font-size="10.5" fill="{MUTED}" '
        f'text-anchor="middle">SHA-256(seal id, inputs, manifest, outputs) {digest.hex()}</text>',
        "  </g>",
    ]


def _bars(modules: list[int]) -> list[tuple[int, int, int]]:
    """(first module, module after the last, height) of each run of dark modules; the guards'
    modules make their own, taller bars."""

    def in_guard(index: int) -> bool:
        return index < len(GUARD) or index >= len(modules) - len(GUARD)

    bars, index = [], 0
    while index < len(modules):
        if not modules[index]:
            index += 1
            continue
        start, guard = index, in_guard(index)
        index += 1
        while index < len(modules) and modules[index] and in_guard(index) == guard:
            index += 1
        bars.append((start, index, GUARD_HEIGHT if guard else BAR_HEIGHT))
    return bars


def _short(text: str, limit: int = 30) -> str:
    """``text`` cut in the middle to ``limit`` characters."""
    if len(text) <= limit:
        return text
    head = (limit - 1) // 2
    return f"{text[:head]}\u2026{text[len(text) - (limit - 1 - head) :]}"


def _hash(digest: str) -> str:
    return f"{digest[:12]}\u2026{digest[-12:]}"


def _number(value: float) -> str:
    text = f"{value:.4f}".rstrip("0").rstrip(".")
    return text or "0"


def _text(value: str) -> str:
    return escape(value)
