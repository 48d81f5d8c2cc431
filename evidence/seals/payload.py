"""What a seal signs: its eleven fields, how each is checked, and the bits its ring and barcode
draw (docs/seals.md "The payload").

Every field is a string of printable ASCII, so the canonical JSON is the same bytes whichever
way a verifier writes it: RFC 8785, or ``json.dumps(sort_keys=True, separators=(",", ":"))``
with or without ``ensure_ascii``. Hashes are stored bare (64 lowercase hex digits); the
``sha256:`` prefix is accepted on the way in and dropped.
"""

import hashlib
import re
from datetime import UTC, datetime

from evidence.canonical import canonical_json
from evidence.ids import uuid7_hex

FIELDS = (
    "seal_id",
    "principal",
    "entitlement_id",
    "run_id",
    "inputs_sha256",
    "run_manifest_sha256",
    "outputs_sha256",
    "container_image",
    "project_id",
    "issued_at",
    "kid",
)
HASH_FIELDS = ("inputs_sha256", "run_manifest_sha256", "outputs_sha256")
# The longest each free-text field may be: an e-mail address (RFC 5321), an OCI image
# reference with its digest, and the ids of the entitlement, run and project.
TEXT_LIMITS = {
    "principal": 320,
    "entitlement_id": 128,
    "run_id": 128,
    "container_image": 512,
    "project_id": 128,
}
HASH_PREFIX = "sha256:"
SEAL_ID = re.compile(r"seal_[0-9a-f]{32}")
KID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,79}")
ISSUED_AT = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z")
_HEX64 = re.compile(r"[0-9a-f]{64}")
_PRINTABLE = re.compile(r"[\x20-\x7e]+")

__all__ = ["canonical_json"]


def new_seal_id() -> str:
    return f"seal_{uuid7_hex()}"


def _shown(value) -> str:
    """A bad value, briefly, for an error message."""
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def check_seal_id(value) -> str:
    if type(value) is not str or not SEAL_ID.fullmatch(value):
        raise ValueError(f"seal_id must be 'seal_' and 32 lowercase hex digits, not {_shown(value)}")
    return value


def check_hash(name: str, value) -> str:
    """The hash as the payload holds it: 64 lowercase hex digits, any ``sha256:`` prefix dropped."""
    text = value[len(HASH_PREFIX) :] if type(value) is str and value.startswith(HASH_PREFIX) else value
    if type(text) is not str or not _HEX64.fullmatch(text):
        raise ValueError(
            f"{name} must be a SHA-256 digest: 64 lowercase hex digits, optionally prefixed "
            f"'sha256:', not {_shown(value)}"
        )
    return text


def check_text(name: str, value) -> str:
    limit = TEXT_LIMITS[name]
    if type(value) is not str or not value:
        raise ValueError(f"{name} must be a non-empty string, not {_shown(value)}")
    if len(value) > limit:
        raise ValueError(f"{name} must be at most {limit} characters (it has {len(value)})")
    if not _PRINTABLE.fullmatch(value):
        raise ValueError(f"{name} must be printable ASCII (no control or non-ASCII characters): {_shown(value)}")
    if value != value.strip():
        raise ValueError(f"{name} must not start or end with a space: {_shown(value)}")
    return value


def check_kid(value) -> str:
    if type(value) is not str or not KID.fullmatch(value):
        raise ValueError(f"kid must match {KID.pattern}, not {_shown(value)}")
    return value


def format_issued_at(moment) -> str:
    """RFC 3339 UTC to the second, with ``Z`` (sub-second digits are dropped)."""
    if not isinstance(moment, datetime) or moment.tzinfo is None:
        raise ValueError(f"issued_at must be a timezone-aware datetime, not {_shown(moment)}")
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def check_issued_at(value) -> str:
    if type(value) is not str or not ISSUED_AT.fullmatch(value):
        raise ValueError(f"issued_at must be RFC 3339 UTC to the second (YYYY-MM-DDTHH:MM:SSZ), not {_shown(value)}")
    try:
        datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ")
    except ValueError:
        raise ValueError(f"issued_at is not a real moment: {_shown(value)}") from None
    return value


def sealed_payload(*, seal_id, issued_at, **fields) -> dict:
    """The payload from the caller's values, checked and normalised, all but the signer's
    ``kid``; ValueError naming the first bad field."""
    unexpected = set(fields) - set(TEXT_LIMITS) - set(HASH_FIELDS)
    if unexpected:
        raise ValueError(f"not a sealed field: {', '.join(sorted(unexpected))}")
    payload = {"seal_id": check_seal_id(seal_id)}
    for name in FIELDS[1:-2]:
        if name not in fields:
            raise ValueError(f"{name} is required")
        value = fields[name]
        payload[name] = check_hash(name, value) if name in HASH_FIELDS else check_text(name, value)
    payload["issued_at"] = format_issued_at(issued_at)
    return payload


def payload_problem(payload) -> str | None:
    """Why a payload read back from a seal is not one this module writes, or None: exactly the
    eleven fields, each in its stored form (bare hashes)."""
    if type(payload) is not dict:
        return "the payload is not a JSON object"
    missing = [name for name in FIELDS if name not in payload]
    if missing:
        return f"the payload lacks {', '.join(missing)}"
    extra = sorted(set(payload) - set(FIELDS))
    if extra:
        return f"the payload has fields a seal does not: {', '.join(extra)}"
    try:
        check_seal_id(payload["seal_id"])
        for name in HASH_FIELDS:
            if check_hash(name, payload[name]) != payload[name]:
                return f"{name} must be stored without its 'sha256:' prefix"
        for name in TEXT_LIMITS:
            check_text(name, payload[name])
        check_issued_at(payload["issued_at"])
        check_kid(payload["kid"])
    except ValueError as error:
        return str(error)
    return None


def bits_of(data: bytes) -> list[int]:
    """The bits of ``data``, most significant bit of the first byte first."""
    number = int.from_bytes(data, "big")
    width = 8 * len(data)
    return [(number >> (width - 1 - index)) & 1 for index in range(width)]


def ring_bits(seal_id: str) -> list[int]:
    """The 128 bits of the seal id's hex digits, clockwise from twelve o'clock."""
    return bits_of(bytes.fromhex(seal_id[len("seal_") :]))


def barcode_digest(payload: dict) -> bytes:
    """SHA-256 of the seal id and the three hashes, one per line (no final newline):
    ``printf '%s\\n%s\\n%s\\n%s' SEAL_ID INPUTS MANIFEST OUTPUTS | sha256sum``."""
    text = "\n".join(
        (payload["seal_id"], payload["inputs_sha256"], payload["run_manifest_sha256"], payload["outputs_sha256"])
    )
    return hashlib.sha256(text.encode("ascii")).digest()
