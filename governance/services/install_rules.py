"""The rules every installer use case applies (install token, confirm, status, heartbeat,
offline renewal): who the caller is in which organization root, and whether they may act.

Each refusal is an :class:`InstallRefused` with edut's error code; the API edge
(``governance/api/installs.py``) gives each code its status.
"""

import re

from django.conf import settings

from governance.choices import MembershipStatus, PrincipalRole, WalletPurpose
from governance.errors import DomainError
from governance.install_ports import HeldEntitlement, entitlement_of
from governance.models import Organization, Principal, PrincipalWallet
from governance.siwe import BadChecksum, checksummed

ADDRESS = re.compile(r"\A0x[0-9a-fA-F]{40}\Z")
SHA256_DIGEST = re.compile(r"\Asha256:[0-9a-f]{64}\Z")
IDENTIFIER = re.compile(r"\A[A-Za-z0-9][A-Za-z0-9._:-]{0,119}\Z")


class InstallRefused(DomainError):
    """An installer request that does not go ahead; ``code`` is the wire's (docs/installs.md)."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


def invalid(field: str, message: str) -> InstallRefused:
    return InstallRefused("invalid_request", f"{field}: {message}")


def wallet_value(value, field: str = "wallet") -> str:
    """A wallet address as stored: EIP-55 checksummed. Lower- or upper-case hex is accepted;
    mixed case must be the checksum."""
    if not isinstance(value, str) or not ADDRESS.match(value):
        raise invalid(field, "must be a 0x-prefixed 20-byte hex address")
    try:
        return checksummed(value)
    except BadChecksum as exc:
        raise InstallRefused("address_checksum_invalid", f"{field}: {exc}") from None


def identifier_value(value, field: str) -> str:
    if not isinstance(value, str) or not IDENTIFIER.match(value):
        raise invalid(field, "must be 1 to 120 characters: letters, digits and . _ : -, starting alphanumeric")
    return value


def digest_value(value, field: str) -> str:
    if not isinstance(value, str) or not SHA256_DIGEST.match(value):
        raise invalid(field, "must be sha256: and 64 lower-case hex digits")
    return value


def same_wallet(session_wallet: str, wallet: str) -> None:
    """The wallet a request names must be the one its wallet session signed in with."""
    if session_wallet != wallet:
        raise InstallRefused("wallet_mismatch", "the wallet session belongs to another wallet")


def principal_in_root(org_root_id: str, principal_id: str) -> Principal:
    """The principal ``principal_id`` of the organization root ``org_root_id``."""
    organization = Organization.objects.filter(org_root_id=org_root_id).first()
    if organization is None:
        raise InstallRefused("organization_not_found", f"no organization root {org_root_id}")
    principal = Principal.objects.filter(organization=organization, principal_id=principal_id).first()
    if principal is None:
        raise InstallRefused("principal_not_found", f"no principal {principal_id} in {org_root_id}")
    return principal


def owns(principal: Principal, wallet: str) -> None:
    """``wallet`` must be one of the principal's ownership wallets (a payment wallet is not)."""
    if not PrincipalWallet.objects.filter(
        principal=principal, address=wallet, purpose=WalletPurpose.OWNERSHIP
    ).exists():
        raise InstallRefused("wallet_not_owner", "the wallet is not an ownership wallet of the principal")


def membership_active(principal: Principal) -> None:
    if principal.membership_status != MembershipStatus.ACTIVE:
        raise InstallRefused("membership_inactive", f"membership is {principal.membership_status}")


def root_owner(principal: Principal) -> None:
    if principal.role != PrincipalRole.ORG_ROOT_OWNER:
        raise InstallRefused("role_not_permitted", "only the organization root owner installs governed runtimes")


def governance_entitlement(principal: Principal, wallet: str) -> HeldEntitlement:
    """The ownership wallet's governance entitlement in the principal's organization."""
    return entitlement_of(principal.organization_id, wallet, settings.MANDATE_GOVERNANCE_PLAN_ID)


def entitlement_active(principal: Principal, wallet: str) -> HeldEntitlement:
    held = governance_entitlement(principal, wallet)
    if held.status != "active":
        raise InstallRefused("entitlement_inactive", f"the governance entitlement is {held.status}")
    return held


def device_chain_id(device) -> str:
    """The device's own hash chain (every install step, park, revival and renewal)."""
    return f"device:{device.pk}"
