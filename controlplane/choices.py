import re

from django.db import models

# A declared resource's id (bundle metadata.id; the MIDAS API's "id").
RESOURCE_ID = re.compile(r"\A[a-z0-9._-]{1,255}\Z")


def is_resource_id(value) -> bool:
    return isinstance(value, str) and RESOURCE_ID.match(value) is not None


class ServiceType(models.TextChoices):
    CUSTOMER_FACING = "customer_facing"
    INTERNAL = "internal"
    TECHNICAL = "technical"


class BusinessServiceStatus(models.TextChoices):
    ACTIVE = "active"
    DEPRECATED = "deprecated"


class StructuralStatus(models.TextChoices):
    """Capabilities and processes."""

    ACTIVE = "active"
    INACTIVE = "inactive"
    DEPRECATED = "deprecated"


class RiskTier(models.TextChoices):
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"


class FailMode(models.TextChoices):
    OPEN = "open"
    CLOSED = "closed"


class SurfaceStatus(models.TextChoices):
    DRAFT = "draft"
    REVIEW = "review"
    ACTIVE = "active"
    DEPRECATED = "deprecated"
    RETIRED = "retired"


class ProfileStatus(models.TextChoices):
    REVIEW = "review"
    ACTIVE = "active"
    DEPRECATED = "deprecated"
    RETIRED = "retired"


TERMINAL_STATUSES = frozenset({"deprecated", "retired"})


class EscalationMode(models.TextChoices):
    AUTO = "auto"
    MANUAL = "manual"


class ConsequenceType(models.TextChoices):
    MONETARY = "monetary"
    RISK_RATING = "risk_rating"


class RiskRating(models.TextChoices):
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    CRITICAL = "critical"


RISK_RATING_RANK = {"low": 0, "medium": 1, "high": 2, "critical": 3}


class AgentType(models.TextChoices):
    AI = "ai"
    SERVICE = "service"
    OPERATOR = "operator"


# YAML agent types that MIDAS bundles use, folded onto Mandate's three.
AGENT_TYPE_ALIASES = {
    "llm_agent": AgentType.AI,
    "copilot": AgentType.AI,
    "workflow": AgentType.SERVICE,
    "automation": AgentType.SERVICE,
    "rpa": AgentType.SERVICE,
}


class OperationalState(models.TextChoices):
    ACTIVE = "active"
    SUSPENDED = "suspended"
    REVOKED = "revoked"


class GrantStatus(models.TextChoices):
    ACTIVE = "active"
    SUSPENDED = "suspended"
    REVOKED = "revoked"


# Grant transitions: revoked is terminal.
GRANT_TRANSITIONS = {
    GrantStatus.ACTIVE: {GrantStatus.SUSPENDED, GrantStatus.REVOKED},
    GrantStatus.SUSPENDED: {GrantStatus.ACTIVE, GrantStatus.REVOKED},
    GrantStatus.REVOKED: set(),
}


class Kind(models.TextChoices):
    """Bundle document kinds, in the order apply creates them."""

    BUSINESS_SERVICE = "BusinessService"
    CAPABILITY = "Capability"
    BUSINESS_SERVICE_CAPABILITY = "BusinessServiceCapability"
    PROCESS = "Process"
    POLICY = "Policy"
    SURFACE = "Surface"
    AGENT = "Agent"
    PROFILE = "Profile"
    GRANT = "Grant"


APPLY_ORDER = list(Kind.values)
VERSIONED_KINDS = frozenset({Kind.SURFACE, Kind.PROFILE})


# --- The action gate (docs/gate.md) ------------------------------------------------------


class ActionRisk(models.TextChoices):
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    CRITICAL = "critical"


class SideEffect(models.TextChoices):
    """What an action may do to the world; a principal's sinks are the side effects of the
    actions it was granted."""

    HTTP_READ = "http_read"
    HTTP_WRITE = "http_write"
    HTTP_DELETE = "http_delete"
    FS_READ = "fs_read"
    FS_WRITE = "fs_write"
    FS_DELETE = "fs_delete"


class VerifierKind(models.TextChoices):
    HTTP_STATUS = "http_status"
    FS_HASH = "fs_hash"
    NONE = "none"


class EgressProfile(models.TextChoices):
    NONE = "none"
    PROXY_ALLOWLIST = "proxy_allowlist"


class FsOperation(models.TextChoices):
    READ = "read"
    LIST = "list"
    CREATE = "create"
    OVERWRITE = "overwrite"
    DELETE = "delete"


class TargetSource(models.TextChoices):
    """Who taught the gate a domain or a path."""

    APPROVAL = "approval"
    CLI = "cli"
    ADMIN = "admin"
