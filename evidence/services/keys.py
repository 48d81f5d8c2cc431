"""Platform signing keys: created on first use, persisted, rotated, published as JWKS.

Private keys never leave this module: callers get signatures, never key material.
"""

import base64
import secrets
from dataclasses import dataclass
from functools import lru_cache

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature
from django.db import IntegrityError, transaction
from django.utils import timezone

from evidence.choices import KeyAlgorithm, KeyStatus
from evidence.encryption import decrypt_at_rest, encrypt_at_rest
from evidence.models import SigningKey


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True)
class Signature:
    kid: str
    algorithm: str
    value: bytes  # Ed25519: 64 bytes; ES256: r||s, 64 bytes (JWS form)

    @property
    def b64url(self) -> str:
        return b64url(self.value)


def _generate(algorithm: str):
    if algorithm == KeyAlgorithm.ED25519:
        private = ed25519.Ed25519PrivateKey.generate()
        raw = private.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        jwk = {"kty": "OKP", "crv": "Ed25519", "x": b64url(raw)}
    elif algorithm == KeyAlgorithm.ES256:
        private = ec.generate_private_key(ec.SECP256R1())
        numbers = private.public_key().public_numbers()
        jwk = {
            "kty": "EC",
            "crv": "P-256",
            "x": b64url(numbers.x.to_bytes(32, "big")),
            "y": b64url(numbers.y.to_bytes(32, "big")),
        }
    else:
        raise ValueError(f"unsupported algorithm {algorithm!r}")
    pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return pem, jwk


def _new_key(algorithm: str) -> SigningKey:
    pem, jwk = _generate(algorithm)
    prefix = "ed25519" if algorithm == KeyAlgorithm.ED25519 else "es256"
    kid = f"{prefix}-{timezone.now():%Y%m%d}-{secrets.token_hex(4)}"
    jwk.update({"kid": kid, "alg": str(algorithm), "use": "sig"})
    return SigningKey.objects.create(
        kid=kid, algorithm=algorithm, public_jwk=jwk, private_key_encrypted=encrypt_at_rest(pem)
    )


def active_key(algorithm: str) -> SigningKey:
    """The active key for ``algorithm``, created on first use (race-safe)."""
    key = SigningKey.objects.filter(algorithm=algorithm, status=KeyStatus.ACTIVE).first()
    if key is not None:
        return key
    try:
        with transaction.atomic():
            return _new_key(algorithm)
    except IntegrityError:  # another process created it first
        return SigningKey.objects.get(algorithm=algorithm, status=KeyStatus.ACTIVE)


@transaction.atomic
def rotate_key(algorithm: str) -> SigningKey:
    """Retire the active key (it stays published) and make a new one active."""
    SigningKey.objects.select_for_update().filter(algorithm=algorithm, status=KeyStatus.ACTIVE).update(
        status=KeyStatus.RETIRED, retired_at=timezone.now()
    )
    forget_active_signers()
    transaction.on_commit(forget_active_signers)
    return _new_key(algorithm)


@lru_cache(maxsize=64)
def _private_key(kid: str, encrypted: str):
    return serialization.load_pem_private_key(decrypt_at_rest(encrypted), password=None)


# The active key per algorithm, (kid, private key), for signers on a hot path (receipts): one
# read per process instead of one query per signature. Rotation here forgets it; a signer that
# learns another process rotated (its kid is no longer active) calls ``forget_active_signers``.
_active_signers: dict[str, tuple[str, object]] = {}


def active_signer(algorithm: str) -> tuple[str, object]:
    """The active key's kid and private key, cached in this process."""
    cached = _active_signers.get(algorithm)
    if cached is None:
        key = active_key(algorithm)
        cached = _active_signers[algorithm] = (key.kid, _private_key(key.kid, key.private_key_encrypted))
    return cached


def forget_active_signers() -> None:
    _active_signers.clear()


def sign(algorithm: str, data: bytes) -> Signature:
    key = active_key(algorithm)
    private = _private_key(key.kid, key.private_key_encrypted)
    if algorithm == KeyAlgorithm.ED25519:
        value = private.sign(data)
    else:
        r, s = decode_dss_signature(private.sign(data, ec.ECDSA(hashes.SHA256())))
        value = r.to_bytes(32, "big") + s.to_bytes(32, "big")
    return Signature(kid=key.kid, algorithm=key.algorithm, value=value)


def public_key_from_jwk(jwk: dict):
    if jwk.get("kty") == "OKP" and jwk.get("crv") == "Ed25519":
        return ed25519.Ed25519PublicKey.from_public_bytes(b64url_decode(jwk["x"]))
    if jwk.get("kty") == "EC" and jwk.get("crv") == "P-256":
        x = int.from_bytes(b64url_decode(jwk["x"]), "big")
        y = int.from_bytes(b64url_decode(jwk["y"]), "big")
        return ec.EllipticCurvePublicNumbers(x, y, ec.SECP256R1()).public_key()
    raise ValueError("unsupported JWK")


def verify_with_jwk(jwk: dict, data: bytes, signature: bytes) -> bool:
    """Check a signature with a public JWK alone — what an offline verifier does."""
    try:
        public = public_key_from_jwk(jwk)
        if isinstance(public, ed25519.Ed25519PublicKey):
            public.verify(signature, data)
        else:
            if len(signature) != 64:
                return False
            der = encode_dss_signature(int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big"))
            public.verify(der, data, ec.ECDSA(hashes.SHA256()))
        return True
    except (InvalidSignature, ValueError, KeyError):
        return False


def verify(kid: str, data: bytes, signature: bytes) -> bool:
    key = SigningKey.objects.filter(kid=kid).first()
    return key is not None and verify_with_jwk(key.public_jwk, data, signature)


def jwks() -> dict:
    """Every key ever used, active first, so signatures made with retired keys still verify."""
    keys = SigningKey.objects.order_by("status", "-created_at")
    return {"keys": [dict(key.public_jwk) for key in keys]}
