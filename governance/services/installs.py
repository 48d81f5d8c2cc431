"""Installing the governed runtime on a device (edut's installer; docs/installs.md).

The launcher's wallet session asks for an install token (``issue_install_token``: the
preconditions, then a single-use ``git_`` token naming the package for the device's platform
and channel), installs the package, and confirms (``confirm_install``: the token, the
package's hash and version, the launcher's receipt). Confirming moves the device to ACTIVE
and starts its availability lease; a failed check records the failure state. Every step is
an event on the device's own hash chain. ``install_status`` reports where a device stands.
"""

import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from governance.choices import AccessClass, AvailabilityState, InstallState, PackageStatus
from governance.install_ports import record_device_event
from governance.models import Device, InstallToken, Principal, RuntimePackage
from governance.services.install_rules import (
    InstallRefused,
    device_chain_id,
    digest_value,
    entitlement_active,
    governance_entitlement,
    identifier_value,
    invalid,
    membership_active,
    owns,
    principal_in_root,
    root_owner,
    same_wallet,
    wallet_value,
)
from governance.services.runtime_packages import latest_package
from governance.timestamps import parse_rfc3339
from governance.ulid import new_ulid

TOKEN_PREFIX = "git_"
FAILED_STATES = {
    InstallState.VERIFY_FAILED,
    InstallState.RECEIPT_INVALID,
    InstallState.ENTITLEMENT_INACTIVE,
    InstallState.POLICY_MISMATCH,
}
TOKEN_REQUEST_FIELDS = {
    "wallet",
    "org_root_id",
    "principal_id",
    "principal_role",
    "device_id",
    "launcher_version",
    "platform",
    "current_runtime_version",
}
TOKEN_REQUEST_OPTIONAL = {"current_runtime_version", "rollout_channel"}
CONFIRM_FIELDS = {
    "install_token",
    "wallet",
    "device_id",
    "entitlement_id",
    "package_hash",
    "runtime_version",
    "installed_at",
    "launcher_receipt_hash",
}
CONFIRM_OPTIONAL = {"policy_hash"}
MAX_FIELD = 200


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def require_fields(data, required: set, optional: set = frozenset()) -> dict:
    """The body as a dict of strings with exactly these fields (optional ones may be absent)."""
    if not isinstance(data, dict):
        raise invalid("body", "must be a JSON object")
    unknown = set(data) - required - optional
    if unknown:
        raise invalid(sorted(unknown)[0], "unknown field")
    missing = sorted((required - optional) - set(data))
    if missing:
        raise invalid(missing[0], "this field is required")
    for name, value in data.items():
        if not isinstance(value, str) or not value or len(value) > MAX_FIELD:
            raise invalid(name, f"must be a non-empty string of at most {MAX_FIELD} characters")
    return data


@dataclass(frozen=True)
class IssuedToken:
    token: str
    record: InstallToken


def issue_install_token(session_wallet: str, data) -> IssuedToken:
    """A single-use install token for the owner's device, with the package to install."""
    data = require_fields(data, TOKEN_REQUEST_FIELDS, TOKEN_REQUEST_OPTIONAL)
    wallet = wallet_value(data["wallet"])
    org_root_id = identifier_value(data["org_root_id"], "org_root_id")
    principal_id = identifier_value(data["principal_id"], "principal_id")
    device_id = identifier_value(data["device_id"], "device_id")
    platform = identifier_value(data["platform"], "platform").lower()
    launcher_version = identifier_value(data["launcher_version"], "launcher_version")
    current_runtime_version = data.get("current_runtime_version", "")
    channel = data.get("rollout_channel")
    same_wallet(session_wallet, wallet)
    principal = principal_in_root(org_root_id, principal_id)
    owns(principal, wallet)
    membership_active(principal)
    root_owner(principal)
    if data["principal_role"] != principal.role:
        raise InstallRefused("role_not_permitted", f"the principal's role is {principal.role}")
    held = entitlement_active(principal, wallet)
    device = Device.objects.filter(wallet=wallet, device_id=device_id).first()
    if device is not None and device.availability_state == AvailabilityState.PARKED:
        raise InstallRefused("availability_parked", "the device's availability is parked: heartbeat or renew first")
    channel = channel or (device.rollout_channel if device is not None else "stable")
    package = latest_package(platform, channel)
    if package is None:
        raise InstallRefused("package_not_found", f"no runtime package for {platform} on the {channel} channel")
    token = TOKEN_PREFIX + new_ulid()
    now = timezone.now()
    with transaction.atomic():
        device = _device_for(device, principal, wallet, device_id, platform, channel, launcher_version)
        record = InstallToken.objects.create(
            token_hash=token_hash(token),
            organization_id=principal.organization_id,
            principal=principal,
            device=device,
            wallet=wallet,
            entitlement_id=held.entitlement_id,
            package=package,
            launcher_version=launcher_version,
            current_runtime_version=current_runtime_version,
            expires_at=now + timedelta(seconds=settings.MANDATE_INSTALL_TOKEN_TTL_SECONDS),
        )
        record_device_event(
            device_chain_id(device),
            "install.token_issued",
            {
                "device_id": device_id,
                "wallet": wallet,
                "org_root_id": org_root_id,
                "principal_id": principal_id,
                "entitlement_id": held.entitlement_id,
                "package_hash": package.package_hash,
                "runtime_version": package.runtime_version,
                "policy_hash": package.policy_hash,
                "launcher_version": launcher_version,
                "install_token_id": str(record.pk),
            },
            wallet,
        )
    return IssuedToken(token, record)


def _device_for(device, principal: Principal, wallet, device_id, platform, channel, launcher_version) -> Device:
    """The device row, made on its first token; a device moved to another principal or
    organization by its wallet's owner follows them."""
    if device is None:
        device, _ = Device.objects.get_or_create(
            wallet=wallet,
            device_id=device_id,
            defaults={
                "organization_id": principal.organization_id,
                "principal": principal,
                "platform": platform,
                "rollout_channel": channel,
                "launcher_version": launcher_version,
            },
        )
    device = Device.objects.select_for_update().get(pk=device.pk)
    device.organization_id, device.principal = principal.organization_id, principal
    device.platform, device.launcher_version = platform, launcher_version
    device.save(update_fields=["organization", "principal", "platform", "launcher_version", "updated_at"])
    return device


@dataclass(frozen=True)
class Confirmed:
    device: Device
    token: InstallToken


def confirm_install(session_wallet: str, data) -> Confirmed:
    """Confirm an install with its token: on success the device is ACTIVE with the package
    the token issued; on a failed check the failure state is recorded and InstallRefused
    raised. Confirming the same install again answers the same."""
    data = require_fields(data, CONFIRM_FIELDS, CONFIRM_OPTIONAL)
    wallet = wallet_value(data["wallet"])
    device_id = identifier_value(data["device_id"], "device_id")
    entitlement_id = identifier_value(data["entitlement_id"], "entitlement_id")
    package_hash = digest_value(data["package_hash"], "package_hash")
    runtime_version = data["runtime_version"]
    installed_at = _installed_at(data["installed_at"])
    policy_hash = digest_value(data["policy_hash"], "policy_hash") if "policy_hash" in data else None
    same_wallet(session_wallet, wallet)
    failure = None
    with transaction.atomic():
        token = (
            InstallToken.objects.select_for_update()
            .select_related("package", "device", "principal__organization")
            .filter(token_hash=token_hash(data["install_token"]))
            .first()
        )
        if token is None or token.wallet != wallet or token.device.device_id != device_id:
            raise InstallRefused("install_token_stale", "no such install token for this wallet and device")
        if token.entitlement_id != entitlement_id:
            raise InstallRefused("install_token_stale", "the install token was issued for another entitlement")
        device = Device.objects.select_for_update().get(pk=token.device_id)
        if token.used_at is not None:
            if _same_confirmation(token, data, package_hash, runtime_version) and device.install_state == "ACTIVE":
                return Confirmed(device, token)
            raise InstallRefused("install_token_stale", "the install token was already used")
        if token.expires_at <= timezone.now():
            raise InstallRefused("install_token_stale", "the install token expired")
        failure = _failed_check(token, data, package_hash, runtime_version, policy_hash)
        if failure is None:
            _activate(token, device, installed_at, data["launcher_receipt_hash"])
            return Confirmed(device, token)
        state, code, message = failure
        device.install_state = state
        device.save(update_fields=["install_state", "updated_at"])
        record_device_event(
            device_chain_id(device),
            "install.failed",
            {
                "device_id": device_id,
                "wallet": wallet,
                "install_state": state,
                "reason": code,
                "package_hash": package_hash,
                "runtime_version": runtime_version,
                "launcher_receipt_hash": data["launcher_receipt_hash"],
            },
            wallet,
        )
    raise InstallRefused(code, message)


def _installed_at(value: str) -> datetime:
    try:
        moment = parse_rfc3339(value)
    except ValueError:
        raise invalid("installed_at", "must be an RFC 3339 timestamp") from None
    if moment > timezone.now() + timedelta(seconds=settings.MANDATE_SIWE_CLOCK_SKEW_SECONDS):
        raise invalid("installed_at", "is in the future")
    return moment


def _same_confirmation(token: InstallToken, data: dict, package_hash: str, runtime_version: str) -> bool:
    return (
        token.package.package_hash == package_hash
        and token.package.runtime_version == runtime_version
        and token.launcher_receipt_hash == data["launcher_receipt_hash"]
    )


def _failed_check(token: InstallToken, data, package_hash, runtime_version, policy_hash):
    """(state, code, message) of the first check the confirmation fails, else None."""
    package: RuntimePackage = token.package
    principal = token.principal
    if package_hash != package.package_hash or runtime_version != package.runtime_version:
        return (
            InstallState.VERIFY_FAILED,
            "package_hash_mismatch",
            "the package installed is not the one the install token issued",
        )
    if package.status != PackageStatus.ACTIVE or (policy_hash is not None and policy_hash != package.policy_hash):
        return (
            InstallState.POLICY_MISMATCH,
            "policy_mismatch",
            "the package's policy is no longer the one the install token issued",
        )
    try:
        digest_value(data["launcher_receipt_hash"], "launcher_receipt_hash")
    except InstallRefused:
        return (
            InstallState.RECEIPT_INVALID,
            "launcher_receipt_invalid",
            "launcher_receipt_hash must be sha256: and 64 lower-case hex digits",
        )
    try:
        membership_active(principal)
    except InstallRefused as refused:
        return InstallState.ENTITLEMENT_INACTIVE, refused.code, str(refused)
    held = governance_entitlement(principal, token.wallet)
    if held.status != "active" or held.entitlement_id != token.entitlement_id:
        return (
            InstallState.ENTITLEMENT_INACTIVE,
            "entitlement_inactive",
            f"the governance entitlement is {held.status}",
        )
    return None


def _activate(token: InstallToken, device: Device, installed_at: datetime, receipt_hash: str) -> None:
    now = timezone.now()
    package = token.package
    token.used_at, token.installed_at, token.launcher_receipt_hash = now, installed_at, receipt_hash
    token.save(update_fields=["used_at", "installed_at", "launcher_receipt_hash"])
    device.install_state = InstallState.ACTIVE
    device.runtime_version, device.package, device.policy_hash = package.runtime_version, package, package.policy_hash
    device.entitlement_id, device.launcher_receipt_hash = token.entitlement_id, receipt_hash
    device.launcher_version = token.launcher_version
    device.activated_at = now
    device.availability_state, device.access_class = AvailabilityState.ACTIVE, AccessClass.CONNECTED
    device.lease_expires_at = now + timedelta(seconds=settings.MANDATE_DEVICE_LEASE_SECONDS)
    device.save()
    record_device_event(
        device_chain_id(device),
        "install.confirmed",
        {
            "device_id": device.device_id,
            "wallet": token.wallet,
            "org_root_id": token.principal.organization.org_root_id or "",
            "principal_id": token.principal.principal_id,
            "entitlement_id": token.entitlement_id,
            "package_hash": package.package_hash,
            "launcher_receipt_hash": receipt_hash,
            "runtime_version": package.runtime_version,
            "policy_hash": package.policy_hash,
            "installed_at": installed_at.isoformat(),
            "lease_expires_at": device.lease_expires_at.isoformat(),
        },
        token.wallet,
    )


ACTIVATION = {
    InstallState.NOT_INSTALLED: "not_installed",
    InstallState.DOWNLOADED: "pending",
    InstallState.VERIFIED: "pending",
    InstallState.BOOTSTRAPPED: "pending",
    InstallState.ACTIVE: "active",
}


def activation_status(device: Device) -> str:
    """``active``, ``not_installed``, ``pending`` on the way, or the failure in lower case."""
    return ACTIVATION.get(device.install_state) or device.install_state.lower()


@dataclass(frozen=True)
class InstallStatus:
    device: Device
    principal: Principal
    entitlement_status: str
    latest_package: RuntimePackage | None


def install_status(session_wallet: str, wallet, device_id) -> InstallStatus:
    """Where the wallet's device stands: membership, entitlement, availability, activation."""
    wallet = wallet_value(wallet)
    device_id = identifier_value(device_id, "device_id")
    same_wallet(session_wallet, wallet)
    device = (
        Device.objects.select_related("principal__organization", "package")
        .filter(wallet=wallet, device_id=device_id)
        .first()
    )
    if device is None:
        raise InstallRefused("device_not_found", "no device with that id for this wallet")
    held = governance_entitlement(device.principal, wallet)
    return InstallStatus(device, device.principal, held.status, latest_package(device.platform, device.rollout_channel))
