import uuid

from django.db import models
from django.db.models import Q
from django.utils import timezone

from entitlements.choices import EntitlementKind, EntitlementStatus


class Entitlement(models.Model):
    """A principal's right under a plan, granted by an organization.

    ``runs`` entitlements are one balance per (organization, principal, plan): issuing again
    adds runs. ``status`` entitlements say whether the holder (an organization's wallet, a
    principal) is entitled at all (``entitlement_status``); they carry no balance.
    The balance never goes below zero: a CHECK constraint backs the services' conditional
    decrement."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    entitlement_id = models.CharField(max_length=64, unique=True)
    organization = models.ForeignKey("governance.Organization", on_delete=models.PROTECT, related_name="entitlements")
    kind = models.CharField(max_length=16, choices=EntitlementKind.choices, default=EntitlementKind.RUNS)
    principal = models.CharField(max_length=320, help_text="an email, an OIDC subject, or a wallet / holder id")
    plan_id = models.CharField(max_length=100)
    runs_total = models.PositiveIntegerField(default=0)
    runs_remaining = models.PositiveIntegerField(default=0)
    entitlement_status = models.CharField(
        max_length=16, choices=EntitlementStatus.choices, default=EntitlementStatus.ACTIVE
    )
    expires_at = models.DateTimeField(null=True, blank=True)
    issued_by = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["organization", "kind", "principal", "plan_id"], name="one_entitlement_per_principal_and_plan"
            ),
            models.CheckConstraint(
                condition=Q(runs_remaining__lte=models.F("runs_total")), name="remaining_within_total"
            ),
        ]
        indexes = [models.Index(fields=["organization", "principal", "kind"], name="entitlement_holder_idx")]

    def __str__(self):
        return f"{self.entitlement_id} ({self.principal}, {self.plan_id})"

    @property
    def status(self) -> str:
        """What the API says: ``expired`` past expiry, ``exhausted`` with no run left,
        else the stored status."""
        if self.expires_at is not None and self.expires_at <= timezone.now():
            return EntitlementStatus.EXPIRED
        if self.kind == EntitlementKind.RUNS and self.runs_remaining == 0:
            return "exhausted"
        return self.entitlement_status


class IssuanceToken(models.Model):
    """A partner's ``X-GBX-ADMIN-TOKEN`` for issuing entitlements in its organization: only
    the SHA-256 of the secret is kept; the secret is shown once, when made."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    organization = models.ForeignKey(
        "governance.Organization", on_delete=models.CASCADE, related_name="issuance_tokens"
    )
    name = models.CharField(max_length=200)
    prefix = models.CharField(max_length=16, unique=True)
    secret_hash = models.CharField(max_length=64)
    created_by = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self):
        return f"{self.name} ({self.prefix}…)"
