"""The Ed25519 public keys launchers verify with, offline: Mandate's own (they sign renewal
bundles and packages; retired ones stay, so old signatures keep verifying) and the external
signers' registered keys (``SignerKey``). Published by ``GET /governance/signer-keys``."""

from governance.install_ports import public_keys
from governance.models import SignerKey


def mandate_keys() -> list[dict]:
    """Mandate's Ed25519 JWKs, oldest first, each with its ``status``. Keys only rotate
    forward (a rotation retires the active key and makes a newer one), so the newest is the
    active one."""
    keys = sorted(
        (dict(key) for key in public_keys() if key.get("kty") == "OKP" and key.get("crv") == "Ed25519"),
        key=lambda key: key.get("added_at", ""),
    )
    for position, key in enumerate(keys, start=1):
        key["status"] = "active" if position == len(keys) else "retired"
    return keys


def active_mandate_kid() -> str:
    """The kid Mandate's next Ed25519 signature carries, as far as the published keys say
    (empty before the first signature makes the first key)."""
    keys = mandate_keys()
    return keys[-1]["kid"] if keys else ""


def external_keys() -> list[dict]:
    return [
        {
            "kty": "OKP",
            "crv": "Ed25519",
            "x": key.public_key,
            "kid": key.key_id,
            "alg": "EdDSA",
            "use": "sig",
            "status": key.status,
        }
        for key in SignerKey.objects.order_by("key_id")
    ]


def published_keys() -> dict:
    """The JWK set of every key a launcher may meet: Mandate's, then the external signers'."""
    return {"keys": mandate_keys() + external_keys()}
