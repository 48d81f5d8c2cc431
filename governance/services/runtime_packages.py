"""Signed runtime packages: what a launcher downloads, and how it knows the package is ours.

A package's **descriptor** is the JSON object of its seven fields below, in RFC 8785
canonical form (all values are strings, so: keys sorted, no spaces, UTF-8). Its signature
is Ed25519 over those bytes, written ``ed25519:<128 hex digits>``, by Mandate's own Ed25519
key (evidence's, the one receipts and seals use) or by an external signer whose public key
is registered (``SignerKey``). ``GET /governance/signer-keys`` publishes both kinds, retired
keys too, so a launcher verifies offline (docs/installs.md).
"""

import base64
import json
import re
from collections.abc import Callable

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ed25519
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction

from governance.choices import PackageStatus, SignerKeyStatus
from governance.errors import Conflict, Invalid
from governance.install_ports import active_kid, public_keys, sign
from governance.models import RuntimePackage, SignerKey
from governance.services.install_rules import InstallRefused

DESCRIPTOR_FIELDS = (
    "package_hash",
    "package_url",
    "platform",
    "policy_hash",
    "rollout_channel",
    "runtime_version",
    "signer_key_id",
)
SIGNATURE = re.compile(r"\Aed25519:[0-9a-f]{128}\Z")
VERSION = re.compile(r"\A[0-9A-Za-z][0-9A-Za-z.+-]{0,39}\Z")


def canonical_strings(document: dict) -> bytes:
    """RFC 8785 for a flat object of strings: sorted keys, no whitespace, UTF-8 (JSON's
    string escaping is the same as RFC 8785's for strings)."""
    if not all(isinstance(value, str) for value in document.values()):
        raise TypeError("only string values")
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def descriptor(fields: dict) -> bytes:
    """The bytes a package signature covers."""
    return canonical_strings({name: fields[name] for name in DESCRIPTOR_FIELDS})


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def published_keys() -> list[dict]:
    """Every key a launcher may meet: Mandate's Ed25519 keys, then the registered external
    signers' (active and retired), as JWKs."""
    external = [
        {
            "kty": "OKP",
            "crv": "Ed25519",
            "x": key.public_key,
            "x_hex": b64url_decode(key.public_key).hex(),
            "kid": key.key_id,
            "alg": "EdDSA",
            "use": "sig",
            "status": key.status,
            "signer": "external",
        }
        for key in SignerKey.objects.order_by("created_at", "key_id")
    ]
    active = active_kid()
    mandate = [
        {**key, "status": "active" if key["kid"] == active else "retired", "signer": "mandate"} for key in public_keys()
    ]
    return [*mandate, *external]


def verify_signature(kid: str, data: bytes, signature: str, keys: list[dict] | None = None) -> bool:
    """Does ``signature`` (``ed25519:<hex>``) over ``data`` verify with the published key ``kid``?"""
    if not isinstance(signature, str) or not SIGNATURE.match(signature):
        return False
    for jwk in keys if keys is not None else published_keys():
        if jwk.get("kid") == kid and jwk.get("kty") == "OKP" and jwk.get("crv") == "Ed25519":
            try:
                ed25519.Ed25519PublicKey.from_public_bytes(b64url_decode(jwk["x"])).verify(
                    bytes.fromhex(signature[8:]), data
                )
                return True
            except (InvalidSignature, ValueError, KeyError):
                return False
    return False


def sign_naming_key(document_for: Callable[[str], bytes]) -> tuple[str, str]:
    """Sign with Mandate's active key a document that names that key (``document_for(kid)``):
    ``(kid, "ed25519:<hex>")``. Should the key rotate between naming and signing, sign again."""
    kid = active_kid()
    for _attempt in range(3):
        signed = sign(document_for(kid))
        if signed.kid == kid:
            return kid, "ed25519:" + signed.signature.hex()
        kid = signed.kid
    raise InstallRefused("signing_key_unstable", "the signing key rotated while signing; try again")


def register_signer_key(key_id: str, public_key: str, description: str = "") -> SignerKey:
    """Register an external signer's Ed25519 public key (raw 32 bytes, base64url)."""
    try:
        raw = b64url_decode(public_key)
        ed25519.Ed25519PublicKey.from_public_bytes(raw)
    except ValueError:
        raise Invalid("must be a raw 32-byte Ed25519 public key, base64url", field="public_key") from None
    if any(jwk.get("kid") == key_id for jwk in public_keys()):
        raise Conflict(f"{key_id} is one of Mandate's own key ids")
    try:
        with transaction.atomic():
            return SignerKey.objects.create(
                key_id=key_id, public_key=base64.urlsafe_b64encode(raw).rstrip(b"=").decode(), description=description
            )
    except IntegrityError:
        raise Conflict(f"signer key {key_id} is already registered") from None


def register_package(
    *,
    platform: str,
    rollout_channel: str,
    runtime_version: str,
    package_url: str,
    package_hash: str,
    policy_hash: str,
    signature: str = "",
    signer_key_id: str = "",
    created_by: str = "",
) -> RuntimePackage:
    """A new package. Without a signature Mandate signs it with its own key; with one, it
    must verify with the named registered external signer's active key."""
    if not VERSION.match(runtime_version or ""):
        raise Invalid("must be 1 to 40 characters: letters, digits and . + -", field="runtime_version")
    fields = {
        "package_hash": package_hash,
        "package_url": package_url,
        "platform": platform,
        "policy_hash": policy_hash,
        "rollout_channel": rollout_channel,
        "runtime_version": runtime_version,
    }
    if signature:
        key = SignerKey.objects.filter(key_id=signer_key_id).first()
        if key is None or key.status != SignerKeyStatus.ACTIVE:
            raise Invalid("must name an active registered external signer key", field="signer_key_id")
        data = descriptor({**fields, "signer_key_id": signer_key_id})
        if not verify_signature(signer_key_id, data, signature):
            raise Invalid("does not verify over the package descriptor with that key", field="signature")
    else:
        signer_key_id, signature = sign_naming_key(lambda kid: descriptor({**fields, "signer_key_id": kid}))
    package = RuntimePackage(**fields, signature=signature, signer_key_id=signer_key_id, created_by=created_by)
    try:
        package.full_clean(exclude=["signature"], validate_constraints=False)
    except ValidationError as exc:
        field, problems = next(iter(exc.message_dict.items()))
        raise Invalid(" ".join(problems), field=field) from None
    try:
        with transaction.atomic():
            package.save()
    except IntegrityError:
        raise Conflict(f"{platform}/{rollout_channel} already has runtime {runtime_version}") from None
    return package


def withdraw_package(package: RuntimePackage) -> RuntimePackage:
    """A withdrawn package is no longer offered; tokens issued for it can no longer confirm."""
    RuntimePackage.objects.filter(pk=package.pk).update(status=PackageStatus.WITHDRAWN)
    package.status = PackageStatus.WITHDRAWN
    return package


def version_key(version: str) -> tuple:
    """Dotted numeric versions order numerically (1.10.0 > 1.9.0); anything else after."""
    core = version.split("+", 1)[0].split("-", 1)
    parts = core[0].split(".")
    numeric = tuple(int(part) if part.isdigit() else -1 for part in parts)
    return (numeric, len(core) == 1)  # a pre-release sorts before its release


def latest_package(platform: str, rollout_channel: str) -> RuntimePackage | None:
    """The newest active package for the platform and channel."""
    packages = RuntimePackage.objects.filter(
        platform=platform, rollout_channel=rollout_channel, status=PackageStatus.ACTIVE
    )
    return max(packages, key=lambda package: (version_key(package.runtime_version), package.created_at), default=None)
