"""Signed evidence packets: one envelope, its audit chain and its integrity verdict, signed
with the platform's Ed25519 evidence key so anyone can check them offline.

The signature covers the RFC 8785 (JCS) canonical JSON of the packet without its
``signature`` and ``kid`` fields. Verifying needs only the packet and the public JWKS
(``/.well-known/jwks.json``); see docs/evidence.md, "Evidence APIs and signed packets".
"""

import json
import math
from dataclasses import dataclass
from datetime import datetime

from django.core.serializers.json import DjangoJSONEncoder
from django.utils import timezone

from envelopes.models import Envelope
from envelopes.representation import envelope_representation
from envelopes.services.integrity import (
    IntegrityRecord,
    assess_chain,
    check_envelope_integrity,
    envelope_event_items,
    envelope_events,
    integrity_report,
)
from evidence.canonical import canonical_json, format_timestamp, legacy_form, map_leaves
from evidence.choices import KeyAlgorithm
from evidence.models import AuditEvent, SigningKey
from evidence.services.chain import SAFE_INTEGER
from evidence.services.keys import b64url_decode, sign, verify_with_jwk

PACKET_ALG = str(KeyAlgorithm.ED25519)  # "EdDSA"
UNSIGNED_FIELDS = ("signature", "kid")
# The integrity fields an offline verifier recomputes and compares (checked_at is the server's clock).
RECOMPUTED_INTEGRITY_FIELDS = ("envelope_id", "valid", "chain_length", "first_event_hash", "final_event_hash")


def _signable(value):
    """``value`` inside I-JSON's number domain, which JCS requires: integers beyond ±(2⁵³−1)
    and non-finite floats (which a stored request body may hold) become strings, except the
    integers a legacy float became (``evidence.canonical.legacy_form``). Any depth."""
    return map_leaves(value, _signable_leaf)


def _signable_leaf(value):
    if isinstance(value, bool) or not isinstance(value, int | float):
        return value
    if isinstance(value, int):
        if abs(value) <= SAFE_INTEGER:
            return value
        # A float such as 1e16 that a writer before the number domain stored (it reads back as
        # an integer): the float it equals, so its event re-hashes offline as it was hashed.
        legacy = legacy_form(value)
        return legacy if legacy is not None else str(value)
    return value if math.isfinite(value) else str(value)


def signed_content(packet: dict) -> bytes:
    """The bytes the packet's signature covers."""
    return canonical_json({key: value for key, value in packet.items() if key not in UNSIGNED_FIELDS})


def build_packet(envelope: Envelope) -> dict:
    """The envelope's evidence packet, signed now. Reads the chain once (one query)."""
    now = timezone.now()
    events = envelope_events(envelope)
    body = {
        "envelope_id": envelope.chain_id,
        "generated_at": format_timestamp(now),
        "envelope": envelope_representation(envelope),
        "audit_events": envelope_event_items(envelope, events),
        "integrity": check_envelope_integrity(envelope, events, now),
        "alg": PACKET_ALG,
    }
    body = _signable(json.loads(json.dumps(body, cls=DjangoJSONEncoder)))
    signature = sign(KeyAlgorithm.ED25519, signed_content(body))
    return {**body, "signature": signature.b64url, "kid": signature.kid}


# --- offline verification ------------------------------------------------------------------------


@dataclass(frozen=True)
class PacketVerdict:
    valid: bool
    reason: str


class MalformedPacket(ValueError):
    pass


def _field(mapping, name: str, kind: type):
    if not isinstance(mapping, dict) or not isinstance(mapping.get(name), kind):
        raise MalformedPacket(f"{name} is missing or not a {kind.__name__}")
    return mapping[name]


def _event_from_item(item, envelope_id: str) -> AuditEvent:
    """An unsaved AuditEvent holding exactly what the packet says, for re-hashing."""
    if not isinstance(item, dict):
        raise MalformedPacket("audit_events must be objects")
    if item.get("envelope_id") != envelope_id:
        raise MalformedPacket(f"audit event {item.get('id')} belongs to another envelope")
    occurred_at = _field(item, "occurred_at", str)
    moment = datetime.fromisoformat(occurred_at)
    if moment.tzinfo is None or format_timestamp(moment) != occurred_at:
        raise MalformedPacket(f"audit event {item.get('id')}: occurred_at is not in the hashed form")
    return AuditEvent(
        id=_field(item, "id", str),
        chain_id=envelope_id,  # an envelope's chain id is its id
        sequence_no=_field(item, "sequence_no", int),
        event_type=_field(item, "event_type", str),
        performer_type=_field(item, "performer_type", str),
        performer_id=_field(item, "performer_id", str),
        payload=item.get("payload"),
        occurred_at=moment,
        prev_hash=_field(item, "prev_hash", str),
        hash=_field(item, "hash", str),
    )


def _public_jwk(kid: str, jwks: dict | None) -> dict | None:
    if jwks is None:
        key = SigningKey.objects.filter(kid=kid).first()
        return key.public_jwk if key else None
    keys = jwks.get("keys") if isinstance(jwks, dict) else None
    return next((k for k in keys or [] if isinstance(k, dict) and k.get("kid") == kid), None)


def _check_signature(packet: dict, jwks: dict | None) -> str | None:
    """Why the signature does not verify, or ``None`` when it does."""
    if packet.get("alg") != PACKET_ALG:
        return f"alg must be {PACKET_ALG}"
    kid = _field(packet, "kid", str)
    jwk = _public_jwk(kid, jwks)
    if jwk is None:
        return f"no public key with kid {kid!r}"
    if jwk.get("kty") != "OKP" or jwk.get("crv") != "Ed25519":
        return f"key {kid!r} is not an Ed25519 key"
    try:
        signature = b64url_decode(_field(packet, "signature", str))
        data = signed_content(packet)
    except ValueError:
        return "the signature or the packet cannot be decoded"
    if not verify_with_jwk(jwk, data, signature):
        return "the signature does not match the packet's content"
    return None


def _check_chain(packet: dict) -> str | None:
    """Re-hash every event and link from the packet alone; compare the integrity section."""
    envelope_id = _field(packet, "envelope_id", str)
    envelope = _field(packet, "envelope", dict)
    if _field(envelope, "identity", dict).get("id") != envelope_id:
        return "the envelope is not the packet's envelope"
    section = _field(envelope, "integrity", dict)
    record = IntegrityRecord(
        audit_event_ids=_field(section, "audit_event_ids", list),
        first_event_hash=_field(section, "first_event_hash", str),
        final_event_hash=_field(section, "final_event_hash", str),
        state=_field(envelope, "state", str),
    )
    events = [_event_from_item(item, envelope_id) for item in _field(packet, "audit_events", list)]
    verdict = assess_chain(events, record)
    claimed = _field(packet, "integrity", dict)
    recomputed = integrity_report(envelope_id, events, verdict, checked_at=claimed.get("checked_at"))
    for name in RECOMPUTED_INTEGRITY_FIELDS:
        if claimed.get(name) != recomputed[name]:
            return f"the integrity section's {name} does not match the audit events"
    if not verdict.valid:
        return f"the audit chain is broken at event {verdict.broken_at}: {verdict.error_kind}: {verdict.error_message}"
    return None


def verify_packet(packet, jwks: dict | None = None) -> PacketVerdict:
    """Check a packet as an offline verifier would: the signature (with ``jwks``, else the
    platform's keys by ``kid``), then every event hash and link, the envelope's integrity
    section, and the packet's integrity verdict."""
    try:
        if not isinstance(packet, dict):
            raise MalformedPacket("a packet is a JSON object")
        reason = _check_signature(packet, jwks) or _check_chain(packet)
    except (MalformedPacket, ValueError, TypeError) as exc:
        reason = f"malformed packet: {exc}"
    return PacketVerdict(reason is None, reason or "signature verified; audit chain intact and matches the envelope")
