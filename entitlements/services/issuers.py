"""Who may issue entitlements: the holder of an ``X-GBX-ADMIN-TOKEN``. A token is either the
one configured for the default organization (``MANDATE_GBX_ADMIN_TOKEN_SHA256``) or an
organization's issuance token made in the admin (``gbx_`` + prefix + secret, shown once).
Only SHA-256 digests are kept; a presented token is compared in constant time."""

import secrets
from dataclasses import dataclass

from django.conf import settings
from django.utils import timezone

from entitlements.models import IssuanceToken
from governance.errors import Refused
from governance.secret_hashing import hash_secret, secret_matches
from governance.services.people import default_organization

TOKEN_PREFIX = "gbx_"
PREFIX_CHARS = 8


@dataclass(frozen=True)
class Issuer:
    organization_id: str
    name: str


def make_issuance_token(organization, name: str, created_by: str = "") -> tuple[IssuanceToken, str]:
    """A new token for ``organization``; the secret is returned once and never stored."""
    prefix = secrets.token_hex(PREFIX_CHARS // 2)
    secret = f"{TOKEN_PREFIX}{prefix}_{secrets.token_urlsafe(32)}"
    token = IssuanceToken.objects.create(
        organization=organization, name=name, prefix=prefix, secret_hash=hash_secret(secret), created_by=created_by
    )
    return token, secret


def revoke_issuance_token(token: IssuanceToken) -> None:
    if token.revoked_at is None:
        token.revoked_at = timezone.now()
        token.save(update_fields=["revoked_at"])


def authenticate_issuer(presented: str | None) -> Issuer:
    """The issuer behind ``presented``; ``Refused`` (code ``missing_admin_token`` → 401, or
    ``invalid_admin_token`` → 403) otherwise."""
    if not presented or not presented.strip():
        raise Refused("X-GBX-ADMIN-TOKEN is required to issue entitlements", code="missing_admin_token")
    presented = presented.strip()
    configured = settings.MANDATE_GBX_ADMIN_TOKEN_SHA256
    if presented.startswith(TOKEN_PREFIX) and presented.count("_") >= 2:
        prefix = presented[len(TOKEN_PREFIX) :].split("_", 1)[0]
        token = IssuanceToken.objects.filter(prefix=prefix, revoked_at__isnull=True).first()
        if secret_matches(presented, token.secret_hash if token else None):
            IssuanceToken.objects.filter(pk=token.pk).update(last_used_at=timezone.now())
            return Issuer(str(token.organization_id), token.name)
    if secret_matches(presented, configured or None):
        return Issuer(str(default_organization().pk), "configured admin token")
    raise Refused("the X-GBX-ADMIN-TOKEN is not valid", code="invalid_admin_token")
