"""Secrets callers present (API tokens, channel keys, invite tokens): only their SHA-256
digest is stored, and a presented secret is checked against it in constant time."""

import hashlib
import hmac


def hash_secret(secret: str) -> str:
    """The hex digest stored (and looked up) for ``secret``."""
    return hashlib.sha256(secret.encode()).hexdigest()


_NO_SECRET = hash_secret("")


def secret_matches(secret: str, stored_hash: str | None) -> bool:
    """Whether ``secret`` is the one ``stored_hash`` was made from. With nothing stored (no
    row matched the secret's prefix) the comparison still runs, so timing does not tell an
    unknown prefix from a wrong secret."""
    matches = hmac.compare_digest(hash_secret(secret), stored_hash if stored_hash is not None else _NO_SECRET)
    return matches and stored_hash is not None
