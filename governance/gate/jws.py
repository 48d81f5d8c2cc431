"""The JOSE pieces leases, DPoP proofs and OIDC ID tokens are made of, with ``cryptography``
alone: compact JWS segments, ES256 signatures (raw ``r || s``), EC P-256 public JWKs and their
RFC 7638 thumbprints, RS256 signatures and RSA public JWKs. Every reader is strict (canonical
base64url, JSON objects, points on the curve) and raises ``ValueError`` with a short reason;
callers turn it into their error code."""

import base64
import hashlib
import json
import re

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

_B64URL = re.compile(r"^[A-Za-z0-9_-]*$")
P256_COORDINATE_BYTES = 32
ES256_SIGNATURE_BYTES = 64
# RSA keys below 2048 bits are refused (NIST SP 800-131A); above 8192 they only cost CPU.
RSA_MIN_BITS = 2048
RSA_MAX_BITS = 8192


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    """Unpadded base64url; ``ValueError`` for any other alphabet, padding or length."""
    if not isinstance(text, str) or not _B64URL.match(text) or len(text) % 4 == 1:
        raise ValueError("not base64url")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def json_segment(value: dict) -> str:
    return b64url(json.dumps(value, separators=(",", ":")).encode())


def split_compact(token: str) -> tuple[str, str, str]:
    """``header.payload.signature``; ``ValueError`` unless exactly three segments."""
    parts = token.split(".")
    if len(parts) != 3 or not all(parts[:2]):
        raise ValueError("expected three dot-separated segments")
    return parts[0], parts[1], parts[2]


def _refuse_constant(name: str):
    raise ValueError(f"{name} is not JSON")


_decode = json.JSONDecoder(parse_constant=_refuse_constant).decode  # json.loads's, built once


def read_json_segment(segment: str) -> dict:
    """The JSON object a segment encodes; ``ValueError`` for anything else."""
    try:
        value = _decode(b64url_decode(segment).decode("utf-8"))
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise ValueError("segment is not base64url JSON") from exc
    if not isinstance(value, dict):
        raise ValueError("segment is not a JSON object")
    return value


def _coordinate(jwk: dict, name: str) -> int:
    text = jwk.get(name)
    if not isinstance(text, str):
        raise ValueError(f"jwk.{name} missing")
    raw = b64url_decode(text)
    # The thumbprint hashes the member as sent: only the one canonical spelling is accepted.
    if len(raw) != P256_COORDINATE_BYTES or b64url(raw) != text:
        raise ValueError(f"jwk.{name} is not a 32-byte base64url coordinate")
    return int.from_bytes(raw, "big")


def p256_public_key(jwk) -> ec.EllipticCurvePublicKey:
    """The public key of an EC P-256 JWK (a point on the curve); ``ValueError`` otherwise.
    A JWK carrying a private part (``d``) is refused: it must never be sent."""
    if not isinstance(jwk, dict):
        raise ValueError("jwk must be an object")
    if jwk.get("kty") != "EC":
        raise ValueError("jwk.kty must be EC")
    if jwk.get("crv") != "P-256":
        raise ValueError("jwk.crv must be P-256")
    if "d" in jwk:
        raise ValueError("jwk must be a public key (it has a private part 'd')")
    x, y = _coordinate(jwk, "x"), _coordinate(jwk, "y")
    try:
        return ec.EllipticCurvePublicNumbers(x, y, ec.SECP256R1()).public_key()
    except ValueError as exc:
        raise ValueError("jwk is not a point on P-256") from exc


def thumbprint(jwk: dict) -> str:
    """RFC 7638 SHA-256 thumbprint of an EC JWK (its required members, in lexical order)."""
    canonical = json.dumps(
        {"crv": jwk["crv"], "kty": jwk["kty"], "x": jwk["x"], "y": jwk["y"]}, separators=(",", ":"), sort_keys=True
    )
    return b64url(hashlib.sha256(canonical.encode()).digest())


def es256_verify(public_key: ec.EllipticCurvePublicKey, signing_input: bytes, signature: bytes) -> bool:
    """An ES256 JWS signature (64 bytes, ``r || s``) over ``signing_input``."""
    if len(signature) != ES256_SIGNATURE_BYTES:
        return False
    r, s = int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big")
    try:
        public_key.verify(encode_dss_signature(r, s), signing_input, ec.ECDSA(hashes.SHA256()))
    except (InvalidSignature, ValueError):
        return False
    return True


def sha256_b64url(text: str) -> str:
    """base64url(SHA-256(text)): a DPoP proof's ``ath`` for an access token."""
    return b64url(hashlib.sha256(text.encode()).digest())


def rsa_public_key(jwk) -> rsa.RSAPublicKey:
    """The public key of an RSA JWK (``n``, ``e``; 2048 to 8192 bits); ``ValueError`` otherwise.
    A JWK carrying a private part (``d``) is refused."""
    if not isinstance(jwk, dict):
        raise ValueError("jwk must be an object")
    if jwk.get("kty") != "RSA":
        raise ValueError("jwk.kty must be RSA")
    if "d" in jwk:
        raise ValueError("jwk must be a public key (it has a private part 'd')")
    n_text, e_text = jwk.get("n"), jwk.get("e")
    if not isinstance(n_text, str) or not isinstance(e_text, str) or len(e_text) > 16:
        raise ValueError("jwk.n and jwk.e must be base64url strings")
    n, e = int.from_bytes(b64url_decode(n_text), "big"), int.from_bytes(b64url_decode(e_text), "big")
    if not RSA_MIN_BITS <= n.bit_length() <= RSA_MAX_BITS:
        raise ValueError(f"jwk.n must be {RSA_MIN_BITS} to {RSA_MAX_BITS} bits")
    try:
        return rsa.RSAPublicNumbers(e, n).public_key()
    except ValueError as exc:
        raise ValueError("jwk is not an RSA public key") from exc


def rs256_verify(public_key: rsa.RSAPublicKey, signing_input: bytes, signature: bytes) -> bool:
    """An RS256 JWS signature (RSASSA-PKCS1-v1_5 with SHA-256) over ``signing_input``."""
    if len(signature) != (public_key.key_size + 7) // 8:
        return False
    try:
        public_key.verify(signature, signing_input, padding.PKCS1v15(), hashes.SHA256())
    except (InvalidSignature, ValueError):
        return False
    return True
