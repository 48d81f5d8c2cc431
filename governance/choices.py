from django.db import models


class Role(models.TextChoices):
    PLATFORM_ADMIN = "platform.admin", "Platform admin"
    PLATFORM_OPERATOR = "platform.operator", "Platform operator"
    PLATFORM_VIEWER = "platform.viewer", "Platform viewer"
    GOVERNANCE_APPROVER = "governance.approver", "Governance approver"
    GOVERNANCE_REVIEWER = "governance.reviewer", "Governance reviewer"


# Older MIDAS / AIOS clients name roles without their namespace.
ROLE_ALIASES = {
    "admin": Role.PLATFORM_ADMIN,
    "operator": Role.PLATFORM_OPERATOR,
    "viewer": Role.PLATFORM_VIEWER,
    "approver": Role.GOVERNANCE_APPROVER,
    "reviewer": Role.GOVERNANCE_REVIEWER,
}

# A role grants the roles listed here too ("platform.viewer or above").
ROLE_IMPLIES = {
    Role.PLATFORM_ADMIN: {Role.PLATFORM_OPERATOR, Role.PLATFORM_VIEWER},
    Role.PLATFORM_OPERATOR: {Role.PLATFORM_VIEWER},
}


def canonical_role(name: str) -> str:
    """Return the namespaced role for ``name`` (aliases accepted); ValueError if unknown."""
    name = (name or "").strip()
    if name in Role.values:
        return name
    if name in ROLE_ALIASES:
        return ROLE_ALIASES[name].value
    raise ValueError(f"unknown role: {name!r}")


def expand_roles(roles) -> frozenset[str]:
    """The roles held, including those implied by a higher role."""
    held = set()
    for role in roles:
        try:
            role = canonical_role(role)
        except ValueError:
            continue
        held.add(role)
        held.update(r.value for r in ROLE_IMPLIES.get(Role(role), ()))
    return frozenset(held)


class TokenStatus(models.TextChoices):
    ACTIVE = "active", "Active"
    REVOKED = "revoked", "Revoked"


# --- governed runtime installs (edut's installer; docs/installs.md) -----------------------


class PrincipalRole(models.TextChoices):
    ORG_ROOT_OWNER = "org_root_owner", "Organization root owner"
    ORG_ADMIN = "org_admin", "Organization admin"
    MEMBER = "member", "Member"
    AGENT_OPERATOR = "agent_operator", "Agent operator"


class MembershipStatus(models.TextChoices):
    ACTIVE = "active", "Active"
    INVITED = "invited", "Invited"
    SUSPENDED = "suspended", "Suspended"
    REVOKED = "revoked", "Revoked"


class IdentityAssurance(models.TextChoices):
    SELF_ASSERTED = "self_asserted", "Self-asserted"
    EMAIL_VERIFIED = "email_verified", "Email verified"
    ONRAMP_ATTESTED = "onramp_attested", "On-ramp attested"
    DOCUMENT_VERIFIED = "document_verified", "Document verified"


class WalletPurpose(models.TextChoices):
    OWNERSHIP = "ownership", "Ownership"
    PAYMENT = "payment", "Payment"


class InstallState(models.TextChoices):
    NOT_INSTALLED = "NOT_INSTALLED", "Not installed"
    DOWNLOADED = "DOWNLOADED", "Downloaded"
    VERIFIED = "VERIFIED", "Verified"
    BOOTSTRAPPED = "BOOTSTRAPPED", "Bootstrapped"
    ACTIVE = "ACTIVE", "Active"
    VERIFY_FAILED = "VERIFY_FAILED", "Verify failed"
    RECEIPT_INVALID = "RECEIPT_INVALID", "Receipt invalid"
    ENTITLEMENT_INACTIVE = "ENTITLEMENT_INACTIVE", "Entitlement inactive"
    POLICY_MISMATCH = "POLICY_MISMATCH", "Policy mismatch"


class AvailabilityState(models.TextChoices):
    ACTIVE = "active", "Active"
    PARKED = "parked", "Parked"


class AccessClass(models.TextChoices):
    """How the device's lease was last kept: by heartbeats, or by an offline renewal bundle."""

    CONNECTED = "connected", "Connected"
    OFFLINE = "offline", "Offline"


class PackageStatus(models.TextChoices):
    ACTIVE = "active", "Active"
    WITHDRAWN = "withdrawn", "Withdrawn"


class SignerKeyStatus(models.TextChoices):
    ACTIVE = "active", "Active"
    RETIRED = "retired", "Retired (still published)"
