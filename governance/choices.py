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
