"""Offline renewal bundles (edut's ``POST /governance/lease/offline-renew``, docs/renewals.md).

An org admin signs a renewal of one principal's device leases, for one ownership wallet, up
to a horizon; the launcher carries it to a device that cannot heartbeat, and applying it
keeps the devices active. The bundle verifies itself: ``signed_payload`` holds the payload
and Mandate's Ed25519 signature over its RFC 8785 bytes, so a launcher checks it with only
the published keys (``GET /governance/signer-keys``). Applying it is single use: one
conditional UPDATE of ``applied_at`` decides which of any number of parallel applies wins.
"""

import base64
import binascii
import json
import re
from dataclasses import dataclass
from datetime import datetime, timedelta

import rfc8785
from django.conf import settings
from django.db import transaction
from django.db.models import F, Value
from django.db.models.functions import Coalesce, Greatest
from django.utils import timezone

from governance.choices import AccessClass, AvailabilityState
from governance.install_ports import public_keys, record_device_event
from governance.models import Device, Person, Principal, RenewalBundle
from governance.services.install_rules import (
    InstallRefused,
    device_chain_id,
    entitlement_active,
    identifier_value,
    invalid,
    membership_active,
    owns,
    principal_in_root,
    same_wallet,
    wallet_value,
)
from governance.services.runtime_packages import SIGNATURE, canonical_strings, sign_naming_key, verify_signature
from governance.timestamps import rfc3339_isoformat
from governance.ulid import new_ulid

BUNDLE_ID = re.compile(r"\Arb_[0-9A-HJKMNP-TV-Z]{26}\Z")
PAYLOAD_TYPE = "offline_renewal"  # so a renewal's signature can never pass for a package's
PAYLOAD_FIELDS = frozenset(
    {"type", "bundle_id", "org_root_id", "principal_id", "wallet", "renewed_until", "valid_until", "issued_at", "kid"}
)
SIGNED_PREFIX = "base64:"
MAX_SIGNED_PAYLOAD_CHARS = 4096  # a bundle is about 800; anything far longer is not one


def bundle_invalid(message: str) -> InstallRefused:
    return InstallRefused("renewal_bundle_invalid", message)


def _whole_seconds(moment: datetime) -> datetime:
    return moment.replace(microsecond=0)


@dataclass(frozen=True)
class SignedRenewal:
    """A bundle's ``signed_payload``: ``base64:`` + standard base64 of the RFC 8785 document
    ``{"payload": {...}, "signature": "ed25519:<hex>"}``."""

    payload: dict[str, str]
    signature: str  # ed25519:<128 hex digits>, over canonical_strings(payload)

    def encode(self) -> str:
        document = {"payload": self.payload, "signature": self.signature}
        return SIGNED_PREFIX + base64.b64encode(rfc8785.dumps(document)).decode("ascii")

    @classmethod
    def parse(cls, text) -> "SignedRenewal":
        """The bundle in ``text``; ``renewal_bundle_invalid`` for anything but exactly the
        canonical document with every payload field, each a string."""
        if not isinstance(text, str) or len(text) > MAX_SIGNED_PAYLOAD_CHARS or not text.startswith(SIGNED_PREFIX):
            raise bundle_invalid("signed_payload must be base64: and the signed document")
        try:
            raw = base64.b64decode(text[len(SIGNED_PREFIX) :], validate=True)
            document = json.loads(raw.decode("utf-8"))
        except (binascii.Error, ValueError, RecursionError):
            raise bundle_invalid("signed_payload is not base64 of a JSON document") from None
        if not isinstance(document, dict) or set(document) != {"payload", "signature"}:
            raise bundle_invalid("the signed document must hold exactly payload and signature")
        payload, signature = document["payload"], document["signature"]
        if not isinstance(payload, dict) or set(payload) != PAYLOAD_FIELDS:
            raise bundle_invalid("the payload must hold exactly " + ", ".join(sorted(PAYLOAD_FIELDS)))
        if not all(isinstance(value, str) for value in payload.values()) or payload["type"] != PAYLOAD_TYPE:
            raise bundle_invalid(f"the payload's fields are strings and its type is {PAYLOAD_TYPE}")
        if not isinstance(signature, str) or not SIGNATURE.match(signature):
            raise bundle_invalid("signature must be ed25519: and 128 lower-case hex digits")
        if rfc8785.dumps(document) != raw:
            # One encoding per bundle: what was signed and stored is the only form accepted.
            raise bundle_invalid("the signed document is not in its canonical (RFC 8785) form")
        return cls(payload, signature)

    def verify(self) -> None:
        """The signature must be by the Mandate key the payload names (retired keys too;
        never an external signer's: only Mandate issues renewals)."""
        if not verify_signature(self.payload["kid"], canonical_strings(self.payload), self.signature, public_keys()):
            raise bundle_invalid("the signature does not verify with the Mandate key the payload names")


# --- creating a bundle (an org admin, in the console or through the API) ---------------------


@dataclass(frozen=True)
class Issuer:
    """Who creates a bundle: their name (``created_by``) and how the evidence names them."""

    name: str
    performer_type: str
    performer_id: str

    @classmethod
    def of_person(cls, person: Person) -> "Issuer":
        return cls(person.get_username(), "person", str(person.pk))

    @classmethod
    def named(cls, name: str) -> "Issuer":
        """Someone the evidence knows only by name (a script, a management command)."""
        return cls(name, "system", name)


def renewals_chain_id(organization) -> str:
    """The organization's chain of issued renewal bundles (issuing touches no device: devices
    may be installed after it; applying writes to each device's own chain)."""
    return f"renewals:{organization.pk}"


def renewal_horizon(now: datetime) -> datetime:
    return now + timedelta(days=settings.MANDATE_RENEWAL_MAX_DAYS)


def _signed(payload: dict) -> tuple[dict, str]:
    """``payload`` naming the key that signs it, and the signature."""
    kid, signature = sign_naming_key(lambda kid: canonical_strings({**payload, "kid": kid}))
    return {**payload, "kid": kid}, signature


@transaction.atomic
def create_renewal_bundle(
    principal: Principal,
    wallet: str,
    renewed_until: datetime,
    valid_until: datetime | None = None,
    *,
    created_by: Issuer | str,
) -> RenewalBundle:
    """Sign a renewal of ``principal``'s devices of ``wallet`` (an ownership wallet) until
    ``renewed_until`` (at most ``MANDATE_RENEWAL_MAX_DAYS`` ahead), to be applied before
    ``valid_until`` (default and at most ``renewed_until``). Times are kept to whole seconds."""
    if isinstance(created_by, str):
        created_by = Issuer.named(created_by)
    organization = principal.organization
    if not organization.org_root_id:
        raise invalid("org_root_id", f"the organization {organization.slug} has no organization root id")
    wallet = wallet_value(wallet)
    owns(principal, wallet)
    membership_active(principal)
    now = timezone.now()
    if not isinstance(renewed_until, datetime) or renewed_until.tzinfo is None:
        raise invalid("renewed_until", "must be a moment with a time zone")
    renewed_until = _whole_seconds(renewed_until)
    if renewed_until <= now:
        raise invalid("renewed_until", "must be in the future")
    if renewed_until > renewal_horizon(now):
        raise invalid("renewed_until", f"must be at most {settings.MANDATE_RENEWAL_MAX_DAYS} days ahead")
    if valid_until is None:
        valid_until = renewed_until
    elif not isinstance(valid_until, datetime) or valid_until.tzinfo is None:
        raise invalid("valid_until", "must be a moment with a time zone")
    valid_until = _whole_seconds(valid_until)
    if valid_until <= now:
        raise invalid("valid_until", "must be in the future")
    if valid_until > renewed_until:
        raise invalid("valid_until", "must not be after renewed_until (a later renewal would renew nothing)")

    bundle_id = "rb_" + new_ulid()
    payload, signature = _signed(
        {
            "type": PAYLOAD_TYPE,
            "bundle_id": bundle_id,
            "org_root_id": organization.org_root_id,
            "principal_id": principal.principal_id,
            "wallet": wallet,
            "renewed_until": rfc3339_isoformat(renewed_until),
            "valid_until": rfc3339_isoformat(valid_until),
            "issued_at": rfc3339_isoformat(_whole_seconds(now)),
        }
    )
    bundle = RenewalBundle.objects.create(
        bundle_id=bundle_id,
        organization=organization,
        principal=principal,
        wallet=wallet,
        renewed_until=renewed_until,
        valid_until=valid_until,
        signed_payload=SignedRenewal(payload, signature).encode(),
        signing_key_id=payload["kid"],
        created_by=created_by.name[:200],
    )
    record_device_event(
        renewals_chain_id(organization),
        "renewal_bundle_issued",
        {**payload, "created_by": created_by.name},
        created_by.performer_id,
        performer_type=created_by.performer_type,
    )
    return bundle


# --- applying a bundle (a launcher, with the wallet's session) --------------------------------


@dataclass(frozen=True)
class AppliedRenewal:
    bundle: RenewalBundle
    renewed_until: datetime
    device_ids: list[str]


def _bound_bundle(renewal: SignedRenewal, request: dict, signed_payload: str) -> RenewalBundle:
    """The stored bundle the signed one is, issued for exactly what the request names."""
    for name, value in request.items():
        if renewal.payload[name] != value:
            raise bundle_invalid(f"the bundle was issued for another {name}")
    bundle = (
        RenewalBundle.objects.select_related("principal", "organization").filter(bundle_id=request["bundle_id"]).first()
    )
    if bundle is None or bundle.signed_payload != signed_payload:
        raise bundle_invalid("Mandate issued no such bundle")
    return bundle


def _refusal_of_unapplicable(bundle: RenewalBundle) -> InstallRefused:
    """Why a bundle cannot be applied now: already applied (checked first: a replay is a
    replay, however late), or past its ``valid_until``."""
    if bundle.applied_at is not None:
        return InstallRefused("renewal_bundle_used", f"applied at {rfc3339_isoformat(bundle.applied_at)}")
    return InstallRefused("renewal_bundle_expired", f"valid until {rfc3339_isoformat(bundle.valid_until)}")


def apply_offline_renewal(
    *, session_wallet: str, wallet, org_root_id, principal_id, bundle_id, signed_payload
) -> AppliedRenewal:
    """Apply a renewal bundle, once: the principal's devices of the wallet in the organization
    become active (access class offline) with their lease at least until ``renewed_until``."""
    wallet = wallet_value(wallet)
    same_wallet(session_wallet, wallet)
    org_root_id = identifier_value(org_root_id, "org_root_id")
    principal_id = identifier_value(principal_id, "principal_id")
    if not isinstance(bundle_id, str) or not BUNDLE_ID.match(bundle_id):
        raise bundle_invalid("bundle_id must be rb_ and a ULID")

    renewal = SignedRenewal.parse(signed_payload)
    renewal.verify()
    request = {"bundle_id": bundle_id, "wallet": wallet, "org_root_id": org_root_id, "principal_id": principal_id}
    bundle = _bound_bundle(renewal, request, signed_payload)

    principal = principal_in_root(org_root_id, principal_id)
    if principal.pk != bundle.principal_id:
        raise bundle_invalid("the bundle was issued for another principal")
    owns(principal, wallet)
    membership_active(principal)
    entitlement_active(principal, wallet)

    now = timezone.now()
    if bundle.applied_at is not None or bundle.valid_until <= now:
        raise _refusal_of_unapplicable(bundle)
    devices = Device.objects.filter(organization_id=principal.organization_id, principal=principal, wallet=wallet)
    with transaction.atomic():
        locked = list(devices.select_for_update().order_by("pk"))
        if not locked:
            raise InstallRefused("device_not_found", f"{principal_id} has no device installed with {wallet}")
        # The one statement that makes the bundle single use: of parallel applies, exactly
        # one updates the row; the others wait on its lock, then find applied_at set.
        won = RenewalBundle.objects.filter(pk=bundle.pk, applied_at__isnull=True, valid_until__gt=now).update(
            applied_at=now
        )
        if not won:
            bundle.refresh_from_db(fields=["applied_at", "valid_until"])
            raise _refusal_of_unapplicable(bundle)
        renewed_until = bundle.renewed_until
        Device.objects.filter(pk__in=[device.pk for device in locked]).update(
            availability_state=AvailabilityState.ACTIVE,
            access_class=AccessClass.OFFLINE,
            lease_expires_at=Greatest(Coalesce(F("lease_expires_at"), Value(renewed_until)), Value(renewed_until)),
            updated_at=now,
        )
        for device in locked:
            record_device_event(
                device_chain_id(device),
                "offline_renewal_applied",
                {
                    "bundle_id": bundle.bundle_id,
                    "device_id": device.device_id,
                    "wallet": wallet,
                    "renewed_until": rfc3339_isoformat(renewed_until),
                    "signing_key_id": bundle.signing_key_id,
                    "previous_availability_state": device.availability_state,
                    "previous_lease_expires_at": rfc3339_isoformat(device.lease_expires_at),
                },
                wallet,
            )
    bundle.applied_at = now
    return AppliedRenewal(bundle, renewed_until, [device.device_id for device in locked])
