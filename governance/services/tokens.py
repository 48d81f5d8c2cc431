"""API bearer tokens: issue (shown once), authenticate (constant time), revoke."""

import secrets

from django.db import transaction
from django.utils import timezone

from governance.choices import TokenStatus, canonical_role
from governance.models import ApiToken, Person
from governance.secret_hashing import hash_secret, secret_matches

TOKEN_SCHEME = "mdt"


def issue_token(principal: Person, name: str, roles, expires_at=None) -> tuple[ApiToken, str]:
    """Create a token; return it with its secret, which is never retrievable again."""
    canonical = sorted({canonical_role(r) for r in roles})
    prefix = secrets.token_hex(6)
    secret = f"{TOKEN_SCHEME}_{prefix}_{secrets.token_urlsafe(32)}"
    token = ApiToken.objects.create(
        name=name,
        principal=principal,
        roles=canonical,
        prefix=prefix,
        secret_hash=hash_secret(secret),
        expires_at=expires_at,
    )
    return token, secret


def prepare_token_secret(token: ApiToken) -> str:
    """Fill prefix and hash on an unsaved token (the admin's add form) and return the secret."""
    token.prefix = secrets.token_hex(6)
    secret = f"{TOKEN_SCHEME}_{token.prefix}_{secrets.token_urlsafe(32)}"
    token.secret_hash = hash_secret(secret)
    token.roles = sorted({canonical_role(r) for r in token.roles})
    return secret


def authenticate_token(secret: str) -> ApiToken | None:
    """The active token whose secret this is, or None. Timing does not reveal the hash."""
    parts = secret.split("_", 2)
    if len(parts) != 3 or parts[0] != TOKEN_SCHEME:
        return None
    token = ApiToken.objects.select_related("principal", "principal__organization").filter(prefix=parts[1]).first()
    if not secret_matches(secret, token.secret_hash if token else None):
        return None
    if token.status != TokenStatus.ACTIVE or not token.principal.is_active:
        return None
    if token.expires_at and token.expires_at <= timezone.now():
        return None
    return token


@transaction.atomic
def revoke_token(token: ApiToken) -> ApiToken:
    token.status = TokenStatus.REVOKED
    token.save(update_fields=["status"])
    return token
