"""Bearer credentials verified once and then kept in memory, for the hot path
(``governance.hotpath``): API tokens (``mdt_``) and wallet sessions (``mws_``).

A credential is kept by the SHA-256 of the presented secret, never the secret. Staleness is
not bounded by the TTL: every hot write re-checks the credential in its own statement (a
token: active, unexpired, same roles, person active, same organization; a wallet session:
active, unexpired) and the service refuses when it no longer stands (:class:`StaleToken`
for tokens), so a revocation takes effect on the next request, as on the Django path. The
TTL only bounds memory and how long a changed organization object lives here.
"""

import abc
import hmac
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass

from governance.choices import expand_roles
from governance.secret_hashing import hash_secret


class StaleToken(Exception):
    """The caller's cached token no longer stands (revoked, expired, roles changed): the
    write re-checked it and refused."""


@dataclass(frozen=True)
class CachedToken:
    """The caller of a hot request, as its token was when it was looked up."""

    token_id: str
    roles: list  # as stored (the write compares them)
    held_roles: frozenset  # ``roles`` with the roles they imply
    subject_id: str
    organization: object
    loaded_at: float
    # The person's email, else their username, as stored: what an entitlement holder's
    # principal is made from (entitlements' hot consume re-checks it in its statement).
    principal_name: str = ""

    @property
    def check(self) -> dict:
        """What the write re-checks."""
        return {"id": self.token_id, "roles": self.roles}

    def holds_any(self, roles: frozenset) -> bool:
        """``HasRole``'s rule: no roles required, or one of them held."""
        return not roles or not roles.isdisjoint(self.held_roles)


class SecretCache(abc.ABC):
    """Entries by the SHA-256 of the presented secret, for ``ttl`` seconds; ``load`` makes
    the entry of a secret not cached (None: not a standing credential, nothing kept)."""

    def __init__(self, ttl: float = 300.0, max_entries: int = 10_000):
        self.ttl, self.max_entries = ttl, max_entries
        self._entries: OrderedDict[str, object] = OrderedDict()
        self._lock = threading.Lock()

    @abc.abstractmethod
    def load(self, secret: str):
        """A fresh entry for ``secret`` (it has ``loaded_at``, ``time.monotonic()``), or None."""

    def cached(self, secret: str):
        """The entry, if cached and fresh (no query)."""
        return self.cached_by_hash(hash_secret(secret))

    def cached_by_hash(self, secret_hash: str):
        entry = self._entries.get(secret_hash)
        if entry is not None and time.monotonic() - entry.loaded_at < self.ttl:
            return entry
        return None

    def get(self, secret: str):
        """The entry, loaded when it is not cached (a query). None for a secret that is not
        a standing credential."""
        entry = self.cached(secret)
        if entry is not None:
            return entry
        entry = self.load(secret)
        if entry is None:
            self.drop(secret)
            return None
        self.put(hash_secret(secret), entry)
        return entry

    def put(self, secret_hash: str, entry) -> None:
        """Keep ``entry`` for the secret whose SHA-256 is ``secret_hash``."""
        with self._lock:
            self._entries[secret_hash] = entry
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)

    def drop(self, secret: str) -> None:
        with self._lock:
            self._entries.pop(hash_secret(secret), None)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


class TokenCache(SecretCache):
    """Verified API tokens (``mdt_``)."""

    def load(self, secret: str) -> CachedToken | None:
        """None for an unknown or inactive token, and for a person with no organization
        (Django decides)."""
        from governance.services.tokens import authenticate_token

        token = authenticate_token(secret)
        if token is None or token.principal.organization is None:
            return None
        return CachedToken(
            token_id=str(token.pk),
            roles=list(token.roles),
            held_roles=expand_roles(token.roles),
            subject_id=str(token.principal.pk),
            organization=token.principal.organization,
            loaded_at=time.monotonic(),
            principal_name=token.principal.email or token.principal.username,
        )


@dataclass(frozen=True)
class CachedWalletSession:
    """A wallet session (Sign-In with Ethereum) as it was when it was looked up."""

    session_id: str
    wallet: str  # EIP-55 checksummed
    loaded_at: float


class WalletSessionCache(SecretCache):
    """Verified wallet sessions (``mws_``): a launcher each, so many (a fleet's heartbeats)."""

    def __init__(self, ttl: float = 300.0, max_entries: int = 100_000):
        super().__init__(ttl, max_entries)

    def load(self, secret: str) -> CachedWalletSession | None:
        from governance.services.wallet_sessions import authenticate_wallet_session

        session = authenticate_wallet_session(secret)
        if session is None:
            return None
        return CachedWalletSession(session_id=str(session.pk), wallet=session.wallet, loaded_at=time.monotonic())

    def load_many(self, wanted: dict[str, str]) -> dict[str, CachedWalletSession]:
        """The active, unexpired sessions of several secrets, by ``{SHA-256 of the secret:
        its prefix}``, found with one query and kept; a secret that is none is left out."""
        from django.utils import timezone

        from governance.choices import TokenStatus
        from governance.models import WalletSession

        loaded_at = time.monotonic()
        rows = WalletSession.objects.filter(
            prefix__in=set(wanted.values()), status=TokenStatus.ACTIVE, expires_at__gt=timezone.now()
        ).values_list("prefix", "secret_hash", "pk", "wallet")
        by_prefix = {prefix: (stored, pk, wallet) for prefix, stored, pk, wallet in rows}
        found = {}
        for secret_hash, prefix in wanted.items():
            stored, pk, wallet = by_prefix.get(prefix, ("", None, ""))
            if pk is not None and hmac.compare_digest(stored, secret_hash):
                found[secret_hash] = CachedWalletSession(session_id=str(pk), wallet=wallet, loaded_at=loaded_at)
                self.put(secret_hash, found[secret_hash])
        return found
