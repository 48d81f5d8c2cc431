"""Bearer tokens verified once and then kept in memory, for the hot path (``governance.hotpath``).

A token is kept by the SHA-256 of the presented secret, never the secret. Staleness is not
bounded by the TTL: every hot write re-checks the token in its own statement (active,
unexpired, same roles, person active, same organization) and the service raises
:class:`StaleToken` when it no longer stands, so a revoked token or a removed role takes
effect on the next request, as on the Django path. The TTL only bounds memory and how
long a changed organization object lives here.
"""

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


class TokenCache:
    """Verified tokens by the SHA-256 of the presented secret, for ``ttl`` seconds."""

    def __init__(self, ttl: float = 300.0, max_entries: int = 10_000):
        self.ttl, self.max_entries = ttl, max_entries
        self._entries: OrderedDict[str, CachedToken] = OrderedDict()
        self._lock = threading.Lock()

    def cached(self, secret: str) -> CachedToken | None:
        """The entry, if cached and fresh (no query)."""
        entry = self._entries.get(hash_secret(secret))
        if entry is not None and time.monotonic() - entry.loaded_at < self.ttl:
            return entry
        return None

    def get(self, secret: str) -> CachedToken | None:
        """The entry, looking the token up when it is not cached (one query). None for an
        unknown or inactive token, and for a person with no organization (Django decides)."""
        from governance.services.tokens import authenticate_token

        entry = self.cached(secret)
        if entry is not None:
            return entry
        token = authenticate_token(secret)
        if token is None or token.principal.organization is None:
            self.drop(secret)
            return None
        entry = CachedToken(
            token_id=str(token.pk),
            roles=list(token.roles),
            held_roles=expand_roles(token.roles),
            subject_id=str(token.principal.pk),
            organization=token.principal.organization,
            loaded_at=time.monotonic(),
            principal_name=token.principal.email or token.principal.username,
        )
        with self._lock:
            self._entries[hash_secret(secret)] = entry
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)
        return entry

    def drop(self, secret: str) -> None:
        with self._lock:
            self._entries.pop(hash_secret(secret), None)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
