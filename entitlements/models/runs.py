import hashlib
import uuid

from django.db import models

from entitlements.choices import RunState


class Run(models.Model):
    """One entitled run, from its consume: what went in (run_start), what came out and the
    seal that proves it (run_complete). A run_id is used once per principal."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    organization = models.ForeignKey("governance.Organization", on_delete=models.PROTECT, related_name="runs")
    entitlement = models.ForeignKey("entitlements.Entitlement", on_delete=models.PROTECT, related_name="runs")
    principal = models.CharField(max_length=320)
    run_id = models.CharField(max_length=200)
    state = models.CharField(max_length=16, choices=RunState.choices, default=RunState.CONSUMED)
    consumed_at = models.DateTimeField()
    started_at = models.DateTimeField(null=True, blank=True)
    inputs_sha256 = models.CharField(max_length=71, blank=True)
    container_image = models.CharField(max_length=500, blank=True)
    project_id = models.CharField(max_length=200, blank=True)
    completed_at = models.DateTimeField(null=True, blank=True)
    outputs_sha256 = models.CharField(max_length=71, blank=True)
    run_manifest_sha256 = models.CharField(max_length=71, blank=True)
    seal_id = models.CharField(max_length=64, blank=True, db_index=True)
    seal_json = models.JSONField(null=True, blank=True)
    seal_sig = models.TextField(blank=True)
    seal_svg = models.TextField(blank=True)
    public_key_pem = models.TextField(blank=True)
    verify_md = models.TextField(blank=True)

    class Meta:
        ordering = ["-consumed_at"]
        constraints = [
            models.UniqueConstraint(fields=["organization", "principal", "run_id"], name="one_run_per_run_id"),
        ]

    def __str__(self):
        return f"{self.run_id} ({self.principal})"

    @property
    def chain_id(self) -> str:
        return run_chain_id(self.organization_id, self.principal, self.run_id)


def run_chain_id(organization_id, principal: str, run_id: str) -> str:
    """The run's evidence chain: one per (organization, principal, run_id), from its first check."""
    digest = hashlib.sha256(f"{organization_id}\n{principal}\n{run_id}".encode()).hexdigest()[:40]
    return f"gbx-run:{digest}"


class SealRedemption(models.Model):
    """A verified seal redeemed for one rerun: once per (organization, principal, seal_id)."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    organization = models.ForeignKey("governance.Organization", on_delete=models.PROTECT, related_name="redemptions")
    principal = models.CharField(max_length=320)
    seal_id = models.CharField(max_length=64)
    entitlement = models.ForeignKey("entitlements.Entitlement", on_delete=models.PROTECT, related_name="redemptions")
    sealed_run = models.ForeignKey(
        "entitlements.Run", null=True, blank=True, on_delete=models.SET_NULL, related_name="redemptions"
    )
    redeemed_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-redeemed_at"]
        constraints = [
            models.UniqueConstraint(fields=["organization", "principal", "seal_id"], name="one_redemption_per_seal"),
        ]

    def __str__(self):
        return f"{self.seal_id} → {self.principal}"
