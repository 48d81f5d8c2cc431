from django.db import models
from django.db.models import Q
from django.utils import timezone

from controlplane.choices import (
    AgentType,
    ConsequenceType,
    EscalationMode,
    FailMode,
    GrantStatus,
    OperationalState,
    ProfileStatus,
    RiskRating,
    RiskTier,
    SurfaceStatus,
)
from controlplane.models.base import Declared


def effective_now(from_field: str, until_field: str, now=None) -> Q:
    """The effective window covers ``now``: started (or unset) and not yet ended."""
    now = now or timezone.now()
    return (Q(**{f"{from_field}__isnull": True}) | Q(**{f"{from_field}__lte": now})) & (
        Q(**{f"{until_field}__isnull": True}) | Q(**{f"{until_field}__gt": now})
    )


class Policy(Declared):
    """A Rego policy, evaluated in-process (regopy). Profiles name it in policy.reference,
    by its id or its package."""

    package = models.CharField(max_length=255)
    version = models.CharField(max_length=64, blank=True)
    source = models.TextField()

    class Meta:
        ordering = ["key"]
        verbose_name_plural = "policies"
        constraints = [models.UniqueConstraint(fields=["organization", "key"], name="unique_policy_key")]


class Surface(Declared):
    """A decision surface, versioned: (key, version) is one immutable definition with a lifecycle."""

    version = models.PositiveIntegerField()
    domain = models.CharField(max_length=255, blank=True)
    category = models.CharField(max_length=255, blank=True)
    risk_tier = models.CharField(max_length=10, choices=RiskTier.choices, blank=True)
    process = models.ForeignKey("controlplane.Process", on_delete=models.PROTECT, related_name="surfaces")
    business_owner = models.CharField(max_length=255, blank=True)
    technical_owner = models.CharField(max_length=255, blank=True)
    required_context = models.JSONField(default=list, blank=True)  # [{name, type, required, description, validation}]
    consequence_types = models.JSONField(default=list, blank=True)
    minimum_confidence = models.FloatField(null=True, blank=True)
    policy_package = models.CharField(max_length=255, blank=True)
    policy_version = models.CharField(max_length=64, blank=True)
    failure_mode = models.CharField(max_length=10, choices=FailMode.choices, default=FailMode.CLOSED)
    tags = models.JSONField(default=list, blank=True)
    status = models.CharField(max_length=12, choices=SurfaceStatus.choices, default=SurfaceStatus.REVIEW)
    effective_from = models.DateTimeField(null=True, blank=True)
    effective_until = models.DateTimeField(null=True, blank=True)
    submitted_by = models.CharField(max_length=255, blank=True)
    approved_by = models.CharField(max_length=255, blank=True)
    approved_at = models.DateTimeField(null=True, blank=True)
    deprecation_reason = models.TextField(blank=True)
    successor_surface_id = models.CharField(max_length=255, blank=True)

    class Meta:
        ordering = ["key", "-version"]
        constraints = [
            models.UniqueConstraint(fields=["organization", "key", "version"], name="unique_surface_version")
        ]
        indexes = [models.Index(fields=["organization", "key", "status"])]

    @property
    def required_field_names(self) -> list[str]:
        return [f["name"] for f in self.required_context if f.get("required", True) and f.get("name")]


class Profile(Declared):
    """An authority profile, versioned like surfaces; attached to a surface by its logical id."""

    version = models.PositiveIntegerField()
    surface_key = models.CharField(max_length=255, db_index=True)
    confidence_threshold = models.FloatField(default=0.0)
    consequence_type = models.CharField(max_length=12, choices=ConsequenceType.choices, blank=True)
    consequence_amount = models.DecimalField(max_digits=20, decimal_places=4, null=True, blank=True)
    consequence_currency = models.CharField(max_length=3, blank=True)
    consequence_risk_rating = models.CharField(max_length=10, choices=RiskRating.choices, blank=True)
    policy_reference = models.CharField(max_length=255, blank=True)
    escalation_mode = models.CharField(max_length=10, choices=EscalationMode.choices, default=EscalationMode.AUTO)
    fail_mode = models.CharField(max_length=10, choices=FailMode.choices, default=FailMode.CLOSED)
    required_context_keys = models.JSONField(default=list, blank=True)
    status = models.CharField(max_length=12, choices=ProfileStatus.choices, default=ProfileStatus.REVIEW)
    effective_date = models.DateTimeField(null=True, blank=True)
    effective_until = models.DateTimeField(null=True, blank=True)
    submitted_by = models.CharField(max_length=255, blank=True)
    approved_by = models.CharField(max_length=255, blank=True)
    approved_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["key", "-version"]
        constraints = [
            models.UniqueConstraint(fields=["organization", "key", "version"], name="unique_profile_version")
        ]
        indexes = [models.Index(fields=["organization", "key", "status"])]

    @property
    def consequence_threshold(self) -> dict | None:
        if self.consequence_type == ConsequenceType.MONETARY:
            return {
                "type": "monetary",
                "amount": float(self.consequence_amount) if self.consequence_amount is not None else None,
                "currency": self.consequence_currency,
            }
        if self.consequence_type == ConsequenceType.RISK_RATING:
            return {"type": "risk_rating", "risk_rating": self.consequence_risk_rating}
        return None


class Agent(Declared):
    """An agent: the one identity that is granted authority, owns approval channels and holds leases."""

    type = models.CharField(max_length=10, choices=AgentType.choices, default=AgentType.AI)
    owner = models.CharField(max_length=255, blank=True)
    model_version = models.CharField(max_length=255, blank=True)
    endpoint = models.CharField(max_length=1000, blank=True)
    operational_state = models.CharField(
        max_length=10, choices=OperationalState.choices, default=OperationalState.ACTIVE
    )

    class Meta:
        ordering = ["key"]
        constraints = [models.UniqueConstraint(fields=["organization", "key"], name="unique_agent_key")]


class Grant(Declared):
    """Authority given to an agent: a profile (by logical id, so it follows approved versions)."""

    agent = models.ForeignKey(Agent, on_delete=models.PROTECT, related_name="grants")
    profile_key = models.CharField(max_length=255, db_index=True)
    granted_by = models.CharField(max_length=255, blank=True)
    grant_reason = models.TextField(blank=True)
    status = models.CharField(max_length=10, choices=GrantStatus.choices, default=GrantStatus.ACTIVE)
    effective_from = models.DateTimeField(null=True, blank=True)
    effective_until = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["key"]
        constraints = [models.UniqueConstraint(fields=["organization", "key"], name="unique_grant_key")]
