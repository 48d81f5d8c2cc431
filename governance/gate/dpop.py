"""DPoP proofs (RFC 9449), as LatchGate's SDKs make them and stricter than LatchGate checks them.

A proof is a compact JWS: header ``typ`` ``dpop+jwt``, ``alg`` ES256 and ``jwk`` (an EC P-256
public key on the curve) whose RFC 7638 thumbprint must equal the key the token is bound to;
claims ``jti``, ``htm``, ``htu``, ``iat`` and ``ath`` all required. ``htm`` is the request's
method in upper case; ``htu``, normalized, must equal ``PUBLIC_BASE_URL`` + the request path
(never the Host header); ``iat`` within [now − 60 s, now + 5 s]; ``ath`` is
base64url(SHA-256(token)). Every check runs on every proof (LatchGate skips the header checks
for a key it has seen); a verified key is kept only to skip rebuilding the point.
Single use of ``jti`` is ``governance.gate.replay``'s.
"""

import hmac
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass

from django.conf import settings

from governance.errors import GateError
from governance.gate import jws

IAT_MAX_AGE_SECONDS = 60
IAT_MAX_AHEAD_SECONDS = 5
MAX_PROOF_CHARS = 8192
MAX_JTI_CHARS = 256
REQUIRED_CLAIMS = ("jti", "htm", "htu", "iat", "ath")


class DPoPRejected(GateError):
    """401 ``invalid_dpop`` with a ``deny_reason``; ``kind`` is a closed label for metrics:
    malformed, bad_header, bad_key, bad_sig, bad_htm, bad_htu, bad_iat, bad_ath."""

    def __init__(self, kind: str, reason: str):
        super().__init__(401, "invalid_dpop", deny_reason=reason)
        self.kind = kind


@dataclass(frozen=True)
class Proof:
    jti: str
    htm: str
    htu: str
    iat: float
    jkt: str


def _strip_default_port(authority: str, scheme: str) -> str:
    host, sep, port = authority.rpartition(":")
    if sep and not port.endswith("]") and ((scheme, port) in (("http", "80"), ("https", "443"))):
        return host
    return authority


def normalize_htu(uri: str) -> str:
    """RFC 9449 §4.2.2 as LatchGate and its SDKs do it: no query or fragment, scheme and
    authority in lower case, no default port, ``/`` for an empty path (path case kept).
    ``ValueError`` for a URI without scheme and authority."""
    uri = uri.split("#", 1)[0].split("?", 1)[0]
    scheme, sep, rest = uri.partition("://")
    if not sep or not scheme or not rest or rest.startswith("/"):
        raise ValueError("not an absolute URI")
    scheme = scheme.lower()
    authority, slash, path = rest.partition("/")
    return f"{scheme}://{_strip_default_port(authority.lower(), scheme)}/{path if slash else ''}"


def expected_htu(path: str) -> str:
    """What ``htu`` must say for a request to ``path`` on this deployment."""
    return normalize_htu(settings.PUBLIC_BASE_URL + path)


def access_token_hash(token: str) -> str:
    return jws.sha256_b64url(token)


class _VerifiedKeys:
    """Public keys of proofs already verified, by thumbprint (a small LRU), so a repeat proof
    from the same agent does not rebuild and re-check its point. The header is still read
    and compared member by member on every proof."""

    def __init__(self, size: int = 4096):
        self.size = size
        self._keys: OrderedDict[str, tuple[str, str, object]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, jkt: str, jwk: dict):
        entry = self._keys.get(jkt)
        if entry is not None and entry[0] == jwk.get("x") and entry[1] == jwk.get("y"):
            return entry[2]
        return None

    def put(self, jkt: str, jwk: dict, public_key) -> None:
        with self._lock:
            self._keys[jkt] = (jwk["x"], jwk["y"], public_key)
            while len(self._keys) > self.size:
                self._keys.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._keys.clear()


verified_keys = _VerifiedKeys()


def _header_key(header: dict, jkt: str):
    if header.get("typ") != "dpop+jwt":
        raise DPoPRejected("bad_header", "typ must be dpop+jwt")
    if header.get("alg") != "ES256":
        raise DPoPRejected("bad_header", "alg must be ES256")
    jwk = header.get("jwk")
    if jwk is None:
        raise DPoPRejected("bad_header", "header has no jwk")
    if isinstance(jwk, dict) and jwk.get("kty") == "EC" and jwk.get("crv") == "P-256" and "d" not in jwk:
        cached = verified_keys.get(jkt, jwk)
        if cached is not None:
            return cached, False
    try:
        public_key = jws.p256_public_key(jwk)
    except ValueError as exc:
        raise DPoPRejected("bad_header", str(exc)) from None
    if not hmac.compare_digest(jws.thumbprint(jwk).encode(), jkt.encode()):
        raise DPoPRejected("bad_key", "key binding failed: the proof's jwk is not the key the token is bound to")
    return public_key, True


def _claims(payload: dict) -> dict:
    missing = [name for name in REQUIRED_CLAIMS if name not in payload]
    if missing:
        raise DPoPRejected("malformed", f"missing claim {missing[0]}")
    for name in ("jti", "htm", "htu", "ath"):
        if not isinstance(payload[name], str):
            raise DPoPRejected("malformed", f"{name} must be a string")
    iat = payload["iat"]
    if isinstance(iat, bool) or not isinstance(iat, int | float):
        raise DPoPRejected("malformed", "iat must be a number")
    if not 0 < len(payload["jti"]) <= MAX_JTI_CHARS:
        raise DPoPRejected("malformed", f"jti must be 1 to {MAX_JTI_CHARS} characters")
    return payload


def verify_proof(proof: str, *, method: str, path: str, token: str, jkt: str, now: float | None = None) -> Proof:
    """The proof's claims if it binds this request (``method``, ``path``) to ``token`` and to
    the key ``jkt``; ``DPoPRejected`` (401 ``invalid_dpop``) naming the first check it fails.
    Does not record the ``jti`` (``governance.gate.replay.remember_proof`` does)."""
    if len(proof) > MAX_PROOF_CHARS:
        raise DPoPRejected("malformed", "proof too long")
    try:
        header_b64, payload_b64, signature_b64 = jws.split_compact(proof)
        header = jws.read_json_segment(header_b64)
    except ValueError as exc:
        raise DPoPRejected("malformed", f"malformed proof: {exc}") from None
    public_key, fresh = _header_key(header, jkt)
    try:
        signature = jws.b64url_decode(signature_b64)
    except ValueError:
        raise DPoPRejected("bad_sig", "signature is not base64url") from None
    if not jws.es256_verify(public_key, f"{header_b64}.{payload_b64}".encode("ascii"), signature):
        raise DPoPRejected("bad_sig", "signature does not verify")
    if fresh:
        verified_keys.put(jkt, header["jwk"], public_key)
    try:
        claims = _claims(jws.read_json_segment(payload_b64))
    except ValueError as exc:
        raise DPoPRejected("malformed", f"malformed claims: {exc}") from None

    if claims["htm"] != method.upper():
        raise DPoPRejected("bad_htm", f"htm must be {method.upper()}")
    want = expected_htu(path)
    try:
        htu = normalize_htu(claims["htu"])
    except ValueError:
        raise DPoPRejected("bad_htu", f"htu must be {want}") from None
    if htu != want:
        raise DPoPRejected("bad_htu", f"htu must be {want}")
    now = time.time() if now is None else now
    if claims["iat"] < now - IAT_MAX_AGE_SECONDS:
        raise DPoPRejected("bad_iat", "iat is too old (more than 60 s ago)")
    if claims["iat"] > now + IAT_MAX_AHEAD_SECONDS:
        raise DPoPRejected("bad_iat", "iat is in the future (more than 5 s ahead)")
    if not hmac.compare_digest(claims["ath"].encode(), access_token_hash(token).encode()):
        raise DPoPRejected("bad_ath", "ath is not the SHA-256 of the presented token")
    return Proof(jti=claims["jti"], htm=claims["htm"], htu=htu, iat=claims["iat"], jkt=jkt)
