"""Operator keys: ``mdo_<prefix>_<secret>``, shown once, stored as a SHA-256, bound to the
thumbprint (``jkt``) of the operator's DPoP key. A stolen key alone is useless: every call
carries a proof made with that key pair (``governance.gate.auth.authenticate_operator``)."""

import re
import secrets

from django.db import transaction
from django.utils import timezone

from governance.audit import record_admin_action
from governance.errors import Conflict, Invalid
from governance.gate import jws
from governance.models import OperatorKey, Organization
from governance.secret_hashing import hash_secret, secret_matches
from governance.services.people import default_organization

KEY_SCHEME = "mdo"
JKT = re.compile(r"^[A-Za-z0-9_-]{43}$")


def jkt_of_jwk(jwk) -> str:
    """The thumbprint of an EC P-256 public JWK; ``Invalid`` for anything else."""
    try:
        jws.p256_public_key(jwk)
    except ValueError as exc:
        raise Invalid(str(exc), field="jwk") from None
    return jws.thumbprint(jwk)


def check_jkt(jkt: str) -> str:
    if not isinstance(jkt, str) or not JKT.match(jkt):
        raise Invalid("must be an RFC 7638 SHA-256 thumbprint (43 base64url characters)", field="jkt")
    return jkt


@transaction.atomic
def create_operator_key(
    name: str, *, jkt: str, created_by: str = "", organization: Organization | None = None
) -> tuple[OperatorKey, str]:
    """A new operator key and its secret, which is never retrievable again."""
    name = (name or "").strip()
    if not name or len(name) > 200:
        raise Invalid("must be 1-200 characters", field="name")
    if OperatorKey.objects.filter(name=name).exists():
        raise Conflict(f"an operator key named {name!r} already exists")
    organization = organization or default_organization()
    prefix = secrets.token_hex(6)
    secret = f"{KEY_SCHEME}_{prefix}_{secrets.token_urlsafe(32)}"
    key = OperatorKey.objects.create(
        name=name,
        organization=organization,
        key_prefix=prefix,
        key_hash=hash_secret(secret),
        jkt=check_jkt(jkt),
        created_by=created_by,
    )
    record_admin_action(
        action="gate.operator_key_created",
        actor_type="user" if created_by else "system",
        actor_id=created_by,
        organization_id=organization.pk,
        target_type="operator_key",
        target_id=str(key.pk),
        details={"name": name, "jkt": key.jkt},
    )
    return key, secret


@transaction.atomic
def revoke_operator_key(key: OperatorKey, *, by: str = "") -> OperatorKey:
    if key.revoked_at is None:
        key.revoked_at = timezone.now()
        key.save(update_fields=["revoked_at"])
        record_admin_action(
            action="gate.operator_key_revoked",
            actor_type="user" if by else "system",
            actor_id=by,
            organization_id=key.organization_id,
            target_type="operator_key",
            target_id=str(key.pk),
            details={"name": key.name},
        )
    return key


def is_operator_key(secret: str) -> bool:
    return secret.startswith(f"{KEY_SCHEME}_")


def find_operator_key(secret: str) -> OperatorKey | None:
    """The unrevoked key whose secret this is, or None (constant time in the secret)."""
    parts = secret.split("_", 2)
    if len(parts) != 3 or parts[0] != KEY_SCHEME:
        return None
    key = OperatorKey.objects.filter(key_prefix=parts[1]).first()
    if not secret_matches(secret, key.key_hash if key else None):
        return None
    return key if key.revoked_at is None else None
