"""The signing keys of trusted OIDC issuers (JWKS), fetched and kept in memory per key source.

A key source is a ``jwks_url`` (fetched with httpx: timeout, no redirects, size cap) or a
``jwks_file`` (read from disk). Keys are reused for ``ttl`` seconds; at most one fetch per
source per ``min_refetch`` seconds, whatever asks for it (an unknown ``kid`` after a key
rotation, a stale set, a failed fetch), so a flood of made-up kids never hammers the issuer.
A failed fetch keeps the previous keys for up to ``max_stale`` seconds. docs/oidc.md.
"""

import json
import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from governance.gate import jws

logger = logging.getLogger(__name__)

FETCH_TIMEOUT_SECONDS = 5.0
MAX_JWKS_BYTES = 256 * 1024
MAX_KEYS = 100
MAX_KID_CHARS = 256
# JWK ``kty`` (and ``crv``) → the one JWS algorithm Mandate verifies with such a key.
ALGORITHM_OF_KEY = {"RSA": "RS256", "EC": "ES256"}


class KeySetUnavailable(Exception):
    """The source gave no usable key set (unreachable, not 200, too large, not a JWKS); the
    message says why, for operators."""


@dataclass(frozen=True)
class SigningKey:
    kid: str
    alg: str  # "RS256" or "ES256"
    public_key: object


@dataclass(frozen=True)
class KeySource:
    """Where an issuer's keys are: exactly one of ``url`` and ``file``."""

    url: str | None = None
    file: str | None = None

    def __str__(self) -> str:
        return self.url or f"file:{self.file}"


@dataclass(frozen=True)
class _Entry:
    keys: dict = field(default_factory=dict)  # kid → SigningKey
    fetched_at: float | None = None  # last successful fetch (clock)
    attempted_at: float = 0.0  # last fetch, successful or not (clock)
    error: str | None = None  # why the last fetch failed, if it did


def signing_key_of(jwk) -> SigningKey:
    """The key a JWKS member describes; ``ValueError`` when Mandate cannot or must not use it."""
    if not isinstance(jwk, dict):
        raise ValueError("not an object")
    kid = jwk.get("kid")
    if not isinstance(kid, str) or not 0 < len(kid) <= MAX_KID_CHARS:
        raise ValueError("no kid")
    if jwk.get("use", "sig") != "sig":
        raise ValueError("not a signing key")
    alg = ALGORITHM_OF_KEY.get(jwk.get("kty"))
    if alg is None:
        raise ValueError("kty is neither RSA nor EC")
    if jwk.get("alg", alg) != alg:
        raise ValueError(f"alg is not {alg}")
    public_key = jws.rsa_public_key(jwk) if alg == "RS256" else jws.p256_public_key(jwk)
    return SigningKey(kid=kid, alg=alg, public_key=public_key)


def _refuse_constant(name: str):
    raise ValueError(f"{name} is not JSON")


def parse_jwks(body: bytes) -> dict:
    """kid → SigningKey for a JWKS document; members Mandate cannot use are skipped (an issuer
    may publish encryption keys or other algorithms beside its signing keys)."""
    try:
        document = json.loads(body.decode("utf-8"), parse_constant=_refuse_constant)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise KeySetUnavailable("not a JSON document") from exc
    members = document.get("keys") if isinstance(document, dict) else None
    if not isinstance(members, list):
        raise KeySetUnavailable('not a JWKS: no "keys" list')
    if len(members) > MAX_KEYS:
        raise KeySetUnavailable(f"more than {MAX_KEYS} keys")
    keys = {}
    for member in members:
        try:
            key = signing_key_of(member)
        except ValueError as exc:
            logger.debug("jwks member skipped: %s", exc)
            continue
        keys.setdefault(key.kid, key)  # a repeated kid: the first one stands
    if not keys:
        raise KeySetUnavailable("no usable RS256 or ES256 signing key")
    return keys


def _read_url(url: str) -> bytes:
    deadline = time.monotonic() + FETCH_TIMEOUT_SECONDS
    try:
        with (
            httpx.Client(timeout=FETCH_TIMEOUT_SECONDS, follow_redirects=False) as client,
            client.stream("GET", url, headers={"Accept": "application/json"}) as response,
        ):
            if response.status_code != 200:
                raise KeySetUnavailable(f"answered HTTP {response.status_code}")
            body = bytearray()
            for chunk in response.iter_bytes():
                body += chunk
                if len(body) > MAX_JWKS_BYTES:
                    raise KeySetUnavailable(f"larger than {MAX_JWKS_BYTES} bytes")
                if time.monotonic() > deadline:
                    raise KeySetUnavailable(f"took longer than {FETCH_TIMEOUT_SECONDS:g} s")
            return bytes(body)
    except httpx.TimeoutException as exc:
        raise KeySetUnavailable(f"timed out after {FETCH_TIMEOUT_SECONDS:g} s") from exc
    except (httpx.HTTPError, httpx.InvalidURL, OSError, UnicodeError) as exc:
        raise KeySetUnavailable(f"unreachable ({type(exc).__name__})") from exc


def _read_file(path: str) -> bytes:
    try:
        with Path(path).open("rb") as handle:
            body = handle.read(MAX_JWKS_BYTES + 1)
    except OSError as exc:
        raise KeySetUnavailable(f"unreadable ({exc.strerror or type(exc).__name__})") from exc
    if len(body) > MAX_JWKS_BYTES:
        raise KeySetUnavailable(f"larger than {MAX_JWKS_BYTES} bytes")
    return body


def load_keys(source: KeySource) -> dict:
    """Fetch (or read) and parse the source's key set now; ``KeySetUnavailable`` if it fails."""
    return parse_jwks(_read_url(source.url) if source.url else _read_file(source.file))


class KeySets:
    """The key sets of every source in use, shared by all threads of the process.

    Reads take no lock; a thread that must fetch takes its source's lock and re-checks, so
    concurrent callers wait for one fetch instead of starting several, and callers whose key
    is already known never wait for a fetch another kid started.
    """

    def __init__(self, ttl: float = 600.0, min_refetch: float = 30.0, max_stale: float = 86400.0, clock=None):
        self.ttl, self.min_refetch, self.max_stale = ttl, min_refetch, max_stale
        self.clock = clock or time.monotonic
        self._entries: dict[KeySource, _Entry] = {}
        self._locks: dict[KeySource, threading.Lock] = {}
        self._guard = threading.Lock()

    def signing_key(self, source: KeySource, kid: str) -> SigningKey | None:
        """The key ``kid`` of ``source``, fetching the set when it is missing, stale or lacks
        ``kid`` (and the last fetch is ``min_refetch`` old); None if the set has no such key.
        ``KeySetUnavailable`` when no usable set is at hand (never fetched, or too stale)."""
        entry = self._entries.get(source)
        if self._should_fetch(entry, kid):
            with self._lock_for(source):
                entry = self._entries.get(source)  # another thread may just have fetched it
                if self._should_fetch(entry, kid):
                    entry = self._fetch(source, entry)
        if entry.fetched_at is None or self.clock() - entry.fetched_at > self.max_stale:
            raise KeySetUnavailable(entry.error or "no key set fetched yet")
        return entry.keys.get(kid)

    def forget(self) -> None:
        """Drop every cached set (tests; a process reconfigured in place)."""
        with self._guard:
            self._entries.clear()

    def _should_fetch(self, entry: _Entry | None, kid: str) -> bool:
        if entry is None:
            return True
        now = self.clock()
        if now - entry.attempted_at < self.min_refetch:
            return False
        stale = entry.fetched_at is None or now - entry.fetched_at >= self.ttl
        return stale or kid not in entry.keys

    def _lock_for(self, source: KeySource) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(source, threading.Lock())

    def _fetch(self, source: KeySource, previous: _Entry | None) -> _Entry:
        now = self.clock()
        try:
            entry = _Entry(keys=load_keys(source), fetched_at=now, attempted_at=now)
        except KeySetUnavailable as exc:
            logger.warning("oidc: jwks fetch failed", extra={"source": str(source), "reason": str(exc)})
            previous = previous or _Entry()
            entry = _Entry(keys=previous.keys, fetched_at=previous.fetched_at, attempted_at=now, error=str(exc))
        self._entries[source] = entry
        return entry


key_sets = KeySets()
