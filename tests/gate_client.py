"""A tiny LatchGate-like client for the gate's tests: DPoP keys, proofs made with
``cryptography`` the way LatchGate's SDKs make them, and leases from ``POST /v1/leases``.

    key = make_key()
    lease = gate_client.lease(api_client)       # or .lease(api_client, key, scopes=[...])
    api_client.post(path, body, format="json", **lease.headers("POST", path))
    httpx.post(url, json=body, headers=lease.http_headers("POST", path))   # a real server

Every proof is fresh (UUID4 ``jti``, integer ``iat``, ``htu`` = PUBLIC_BASE_URL + path);
``proof(...)`` takes overrides so tests can break one thing at a time.
"""

import base64
import hashlib
import json
import time
import uuid
from dataclasses import dataclass

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from django.conf import settings

DROP = object()  # an override value that removes the member


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def segment(value: dict) -> str:
    return b64url(json.dumps(value, separators=(",", ":")).encode())


def ath(token: str) -> str:
    return b64url(hashlib.sha256(token.encode("ascii")).digest())


def url(path: str) -> str:
    return settings.PUBLIC_BASE_URL + path


def _merge(base: dict, overrides: dict | None) -> dict:
    merged = dict(base)
    for name, value in (overrides or {}).items():
        if value is DROP:
            merged.pop(name, None)
        else:
            merged[name] = value
    return merged


class DPoPKey:
    """A key pair (P-256 unless ``curve`` says otherwise) and its public JWK."""

    def __init__(self, curve: ec.EllipticCurve | None = None):
        self.private = ec.generate_private_key(curve or ec.SECP256R1())
        numbers = self.private.public_key().public_numbers()
        size = (self.private.curve.key_size + 7) // 8
        crv = {"secp256r1": "P-256", "secp384r1": "P-384"}.get(self.private.curve.name, self.private.curve.name)
        self.jwk = {
            "kty": "EC",
            "crv": crv,
            "x": b64url(numbers.x.to_bytes(size, "big")),
            "y": b64url(numbers.y.to_bytes(size, "big")),
        }

    @property
    def jkt(self) -> str:
        canonical = json.dumps({k: self.jwk[k] for k in ("crv", "kty", "x", "y")}, separators=(",", ":"))
        return b64url(hashlib.sha256(canonical.encode()).digest())

    def sign(self, signing_input: bytes) -> str:
        r, s = decode_dss_signature(self.private.sign(signing_input, ec.ECDSA(hashes.SHA256())))
        size = (self.private.curve.key_size + 7) // 8
        return b64url(r.to_bytes(size, "big") + s.to_bytes(size, "big"))

    def proof(
        self,
        method: str,
        target: str,
        token: str | None,
        *,
        header: dict | None = None,
        claims: dict | None = None,
        signer: "DPoPKey | None" = None,
    ) -> str:
        """A DPoP proof for ``method`` on ``target`` (a path, or a full URL) bound to ``token``.
        ``header``/``claims`` override members (``DROP`` removes one); ``signer`` signs with
        another key than the one in the header."""
        htu = target if "://" in target else url(target)
        base_claims = {"jti": str(uuid.uuid4()), "htm": method.upper(), "htu": htu, "iat": int(time.time())}
        if token is not None:
            base_claims["ath"] = ath(token)
        base_header = {"typ": "dpop+jwt", "alg": "ES256", "jwk": self.jwk}
        signing_input = f"{segment(_merge(base_header, header))}.{segment(_merge(base_claims, claims))}"
        return f"{signing_input}.{(signer or self).sign(signing_input.encode('ascii'))}"


def make_key(curve: ec.EllipticCurve | None = None) -> DPoPKey:
    return DPoPKey(curve)


def proof(key: DPoPKey, method: str, target: str, token: str | None, **overrides) -> str:
    return key.proof(method, target, token, **overrides)


@dataclass
class Lease:
    lease_jwt: str
    session_id: str
    lease_jti: str
    expires_at: str
    key: DPoPKey

    def proof(self, method: str, path: str, **overrides) -> str:
        return self.key.proof(method, path, self.lease_jwt, **overrides)

    def headers(self, method: str, path: str, **overrides) -> dict:
        """Django test client keyword arguments (``HTTP_...``) for one call."""
        return {"HTTP_AUTHORIZATION": f"DPoP {self.lease_jwt}", "HTTP_DPOP": self.proof(method, path, **overrides)}

    def http_headers(self, method: str, path: str, **overrides) -> dict:
        """Plain header names, for httpx against a running server."""
        return {"Authorization": f"DPoP {self.lease_jwt}", "DPoP": self.proof(method, path, **overrides)}


def lease_body(key: DPoPKey, scopes=("tools:call",), budgets=None, **extra) -> dict:
    body = {"scopes": list(scopes), "dpop_jwk": key.jwk, **extra}
    if budgets is not None:
        body["budgets"] = budgets
    return body


def lease(client, key: DPoPKey | None = None, *, scopes=("tools:call",), budgets=None, **extra) -> Lease:
    """A lease from ``POST /v1/leases`` through a Django/DRF test client (authenticated as it
    is, or open leases on); fails the test unless it is issued."""
    key = key or make_key()
    response = client.post(
        "/v1/leases", json.dumps(lease_body(key, scopes, budgets, **extra)), content_type="application/json"
    )
    assert response.status_code == 200, response.content
    body = response.json()
    return Lease(body["lease_jwt"], body["session_id"], body["lease_jti"], body["expires_at"], key)


def operator_headers(key: DPoPKey, api_key: str, method: str, path: str, **overrides) -> dict:
    """Django test client keyword arguments for an operator key call."""
    return {"HTTP_AUTHORIZATION": f"DPoP {api_key}", "HTTP_DPOP": key.proof(method, path, api_key, **overrides)}


def reset_gate_caches() -> None:
    """Forget what this process keeps between requests (gate state, verified leases and keys,
    the lease rate bucket): the database is rolled back between tests, the caches are not."""
    from governance.gate.auth import forget_cached_leases
    from governance.gate.dpop import verified_keys
    from governance.gate.leases import issuance_limit
    from governance.gate.state import forget_cached_state

    forget_cached_state()
    forget_cached_leases()
    verified_keys.clear()
    issuance_limit.reset()
