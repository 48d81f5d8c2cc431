"""A local OpenID Connect issuer, for the tests and for sites without Google (docs/oidc.md).

It holds an RSA key (``rsa-1``, RS256) and an EC P-256 key (``ec-1``, ES256), publishes their
JWKS to a file (``jwks.json``) and, on request, on ``http://127.0.0.1:<port>/jwks.json``, and
mints ID tokens with ``id_token(email=..., sub=..., aud=..., exp=..., kid=..., alg=..., **claims)``.
The ``oidc_issuer`` fixture trusts it in ``settings.MANDATE_OIDC_ISSUERS`` (its file).

From a shell, keys and settings persist in a directory:

    python -m tests.oidc_issuer init DIR [--issuer URL] [--audience AUD]   # prints MANDATE_OIDC_ISSUERS
    python -m tests.oidc_issuer token DIR --email runner@example.com [--ttl 3600]
"""

import argparse
import base64
import hashlib
import hmac
import json
import os
import threading
import time
from functools import cache
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

ISSUER = "https://issuer.mandate.test"
AUDIENCE = "mandate-test-audience"
EMAIL = "runner@example.com"
SUBJECT = "104857600000000000001"
OMIT = None  # a claim given as None is left out of the token


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def segment(value) -> str:
    return b64url(json.dumps(value, separators=(",", ":")).encode())


def _int_bytes(value: int, length: int | None = None) -> bytes:
    return value.to_bytes(length or (value.bit_length() + 7) // 8, "big")


def public_jwk(kid: str, key) -> dict:
    """The public JWK of a private key, as issuers publish it (``use``, ``alg``, ``kid``)."""
    if isinstance(key, rsa.RSAPrivateKey):
        numbers = key.public_key().public_numbers()
        return {"kty": "RSA", "use": "sig", "alg": "RS256", "kid": kid, "n": b64url(_int_bytes(numbers.n)),
                "e": b64url(_int_bytes(numbers.e))}  # fmt: skip
    numbers = key.public_key().public_numbers()
    return {"kty": "EC", "use": "sig", "alg": "ES256", "kid": kid, "crv": "P-256",
            "x": b64url(_int_bytes(numbers.x, 32)), "y": b64url(_int_bytes(numbers.y, 32))}  # fmt: skip


def new_key(kind: str):
    if kind == "RSA":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return ec.generate_private_key(ec.SECP256R1())


@cache
def shared_keys() -> dict:
    """The two keys every test issuer of this process starts with (RSA generation is slow)."""
    return {"rsa-1": new_key("RSA"), "ec-1": new_key("EC")}


def sign(signing_input: bytes, key) -> bytes:
    if isinstance(key, rsa.RSAPrivateKey):
        return key.sign(signing_input, padding.PKCS1v15(), hashes.SHA256())
    r, s = decode_dss_signature(key.sign(signing_input, ec.ECDSA(hashes.SHA256())))
    return _int_bytes(r, 32) + _int_bytes(s, 32)


class TestIssuer:
    __test__ = False  # not a test class, whatever its name says

    def __init__(self, directory: Path, *, issuer: str = ISSUER, audience: str = AUDIENCE, keys: dict | None = None):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.issuer, self.audience = issuer, audience
        self.keys = dict(keys or {})  # kid → private key
        self.jwks_path = self.directory / "jwks.json"
        self.published: list[str] = list(self.keys)
        self.jwks_status = 200  # what the served JWKS answers (tests make it fail)
        self.jwks_requests = 0
        self._server: ThreadingHTTPServer | None = None
        self.publish(*self.published)

    # --- keys and their JWKS ----------------------------------------------------------
    def add_key(self, kind: str = "RSA", kid: str | None = None) -> str:
        """A new key, not yet published (``publish`` it to rotate)."""
        kid = kid or f"{kind.lower()}-{len(self.keys) + 1}"
        self.keys[kid] = new_key(kind)
        return kid

    def jwks(self) -> dict:
        return {"keys": [public_jwk(kid, self.keys[kid]) for kid in self.published]}

    def publish(self, *kids: str) -> None:
        """Publish exactly these keys (file and server), as an issuer does when it rotates."""
        self.published = list(kids)
        temporary = self.jwks_path.with_suffix(".tmp")
        temporary.write_text(json.dumps(self.jwks()))
        os.replace(temporary, self.jwks_path)

    # --- tokens -----------------------------------------------------------------------
    def id_token(
        self,
        email: str | None = EMAIL,
        sub: str | None = SUBJECT,
        aud=None,
        exp: float | None = None,
        kid: str | None = None,
        alg: str = "RS256",
        *,
        iat: float | None = None,
        iss: str | None = None,
        signed_by: str | None = None,
        header: dict | None = None,
        **claims,
    ) -> str:
        """An ID token with Google's shape: ``iss``, ``aud``, ``sub``, ``email`` and
        ``email_verified`` (when ``email``), ``iat`` now, ``exp`` in an hour. A claim given as
        None is left out. ``alg`` ``none`` is unsigned; ``HS256`` is keyed with the RSA key's
        public modulus (the algorithm-confusion attack). ``signed_by`` signs with another key
        than ``kid`` names; ``header`` adds or overrides header members."""
        now = time.time()
        kid = kid or ("ec-1" if alg == "ES256" else "rsa-1")
        payload = {
            "iss": iss or self.issuer,
            "aud": aud if aud is not None else self.audience,
            "sub": sub,
            "email": email,
            "email_verified": True if email is not None else None,
            "iat": int(now) if iat is None else iat,
            "exp": int(now) + 3600 if exp is None else exp,
            **claims,
        }
        payload = {name: value for name, value in payload.items() if value is not None}
        head = {name: value for name, value in {"alg": alg, "kid": kid, "typ": "JWT", **(header or {})}.items()
                if value is not None}  # fmt: skip
        signing_input = f"{segment(head)}.{segment(payload)}".encode("ascii")
        if alg == "none":
            signature = b""
        elif alg.startswith("HS"):
            secret = public_jwk("rsa-1", self.keys["rsa-1"])["n"].encode()
            signature = hmac.new(secret, signing_input, hashlib.sha256).digest()
        else:
            signature = sign(signing_input, self.keys[signed_by or kid])
        return f"{signing_input.decode('ascii')}.{b64url(signature)}"

    # --- settings ---------------------------------------------------------------------
    def settings_entry(self, *, served: bool = False) -> dict:
        """This issuer as an entry of MANDATE_OIDC_ISSUERS (its file, or its served URL)."""
        source = {"jwks_url": self.jwks_url} if served else {"jwks_file": str(self.jwks_path)}
        return {"issuer": self.issuer, "audience": self.audience, "name": "test issuer", **source}

    # --- serving the JWKS on 127.0.0.1 ------------------------------------------------
    @property
    def jwks_url(self) -> str:
        if self._server is None:
            self._serve()
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/jwks.json"

    def _serve(self) -> None:
        issuer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):  # noqa: N802 (http.server's name)
                issuer.jwks_requests += 1
                found = self.path == "/jwks.json"
                status = issuer.jwks_status if found else 404
                body = json.dumps(issuer.jwks()).encode() if status == 200 else b'{"error":"unavailable"}'
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


@pytest.fixture
def oidc_issuer(settings, tmp_path):
    """A ``TestIssuer`` trusted through its JWKS file (``settings_entry()``), with empty key caches."""
    from governance.jwks import key_sets

    issuer = TestIssuer(tmp_path / "oidc-issuer", keys=shared_keys())
    settings.MANDATE_OIDC_ISSUERS = [issuer.settings_entry()]
    key_sets.forget()
    yield issuer
    issuer.close()
    key_sets.forget()


# --- command line: a persistent issuer for a site without Google ---------------------------
def _load(directory: Path) -> TestIssuer:
    config = json.loads((directory / "issuer.json").read_text())
    keys = {}
    for kid in config["kids"]:
        pem = (directory / f"{kid}.pem").read_bytes()
        keys[kid] = serialization.load_pem_private_key(pem, password=None)
    return TestIssuer(directory, issuer=config["issuer"], audience=config["audience"], keys=keys)


def _init(directory: Path, issuer: str, audience: str) -> TestIssuer:
    directory.mkdir(parents=True, exist_ok=True)
    keys = {"rsa-1": new_key("RSA"), "ec-1": new_key("EC")}
    for kid, key in keys.items():
        pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        path = directory / f"{kid}.pem"
        path.touch(mode=0o600)
        path.write_bytes(pem)
    config = {"issuer": issuer, "audience": audience, "kids": list(keys)}
    (directory / "issuer.json").write_text(json.dumps(config))
    return TestIssuer(directory.resolve(), issuer=issuer, audience=audience, keys=keys)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.oidc_issuer", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    init = commands.add_parser("init", help="create keys and jwks.json in DIR; print MANDATE_OIDC_ISSUERS")
    init.add_argument("directory", type=Path)
    init.add_argument("--issuer", default=ISSUER)
    init.add_argument("--audience", default=AUDIENCE)
    token = commands.add_parser("token", help="print an ID token from the issuer in DIR")
    token.add_argument("directory", type=Path)
    token.add_argument("--email", default=None)
    token.add_argument("--sub", default=SUBJECT)
    token.add_argument("--ttl", type=int, default=3600, help="seconds until exp")
    token.add_argument("--alg", choices=["RS256", "ES256"], default="RS256")
    args = parser.parse_args(argv)
    if args.command == "init":
        issuer = _init(args.directory, args.issuer, args.audience)
        print(json.dumps([issuer.settings_entry()]))
    else:
        issuer = _load(args.directory)
        print(issuer.id_token(email=args.email, sub=args.sub, exp=int(time.time()) + args.ttl, alg=args.alg))


if __name__ == "__main__":
    main()
