"""Issuing a seal: check the caller's values, sign the canonical payload with the platform's
active Ed25519 key, draw it. Nothing is stored here: the caller keeps the bundle."""

import base64
from dataclasses import dataclass

from cryptography.hazmat.primitives import serialization
from django.utils import timezone

from evidence.choices import KeyAlgorithm, KeyStatus
from evidence.models import SigningKey
from evidence.seals.instructions import verify_instructions
from evidence.seals.payload import canonical_json, check_kid, new_seal_id, sealed_payload
from evidence.seals.svg import render_seal
from evidence.services.keys import active_signer, forget_active_signers


@dataclass(frozen=True)
class SealBundle:
    seal_id: str
    seal_json: dict  # the signed payload (payload.FIELDS)
    seal_sig: str  # Ed25519 over canonical_json(seal_json), standard base64 with padding
    seal_svg: str
    public_key_pem: str  # the signing key's public half, SubjectPublicKeyInfo PEM
    verify_md: str  # VERIFY.md

    @property
    def seal_json_bytes(self) -> bytes:
        """seal.json as the bundle holds it: exactly the signed bytes."""
        return canonical_json(self.seal_json)


def issue_seal(
    *,
    principal,
    entitlement_id,
    run_id,
    inputs_sha256,
    run_manifest_sha256,
    outputs_sha256,
    container_image,
    project_id,
    issued_at=None,
    seal_id=None,
) -> SealBundle:
    """A signed seal over these values. Hashes are SHA-256 hex (64 lowercase digits, ``sha256:``
    allowed and dropped); ``issued_at`` an aware datetime (default now), kept to the second;
    ``seal_id`` ``seal_`` + 32 hex digits (default a new UUIDv7). ValueError naming a bad value."""
    fields = {
        "principal": principal,
        "entitlement_id": entitlement_id,
        "run_id": run_id,
        "inputs_sha256": inputs_sha256,
        "run_manifest_sha256": run_manifest_sha256,
        "outputs_sha256": outputs_sha256,
        "container_image": container_image,
        "project_id": project_id,
    }
    seal_id = new_seal_id() if seal_id is None else seal_id
    moment = timezone.now() if issued_at is None else issued_at
    payload = sealed_payload(seal_id=seal_id, issued_at=moment, **fields)
    kid, private = _signer()
    payload["kid"] = check_kid(kid)
    signature = base64.b64encode(private.sign(canonical_json(payload))).decode("ascii")
    public_pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return SealBundle(
        seal_id=payload["seal_id"],
        seal_json=payload,
        seal_sig=signature,
        seal_svg=render_seal(payload, signature),
        public_key_pem=public_pem.decode("ascii"),
        verify_md=verify_instructions(payload),
    )


def _signer():
    """The active Ed25519 key (cached per process), once the database confirms it is still the
    active one: another process may have rotated it, or the transaction that created it may have
    rolled back (then the cache names a key nobody could ever look up)."""
    for _ in range(2):
        kid, private = active_signer(KeyAlgorithm.ED25519)
        if SigningKey.objects.filter(kid=kid, status=KeyStatus.ACTIVE).exists():
            return kid, private
        forget_active_signers()
    raise RuntimeError("no active Ed25519 key to sign the seal with")
