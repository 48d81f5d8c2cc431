from django.db import models


class EntitlementKind(models.TextChoices):
    """What an entitlement meters: a balance of runs (GBX), or a status the holder is in
    (a governance subscription an organization's wallet holds: the installer reads it)."""

    RUNS = "runs", "Runs (a balance)"
    STATUS = "status", "Status (active or not)"


class EntitlementStatus(models.TextChoices):
    ACTIVE = "active"
    INACTIVE = "inactive"
    EXPIRED = "expired"


class RunState(models.TextChoices):
    """A run's place in the call order check → consume → run_start → run_complete (a run
    exists from its consume)."""

    CONSUMED = "consumed"
    STARTED = "started"
    COMPLETED = "completed"


class RunEvent(models.TextChoices):
    """The run chain's evidence events (docs/entitlements.md "Evidence")."""

    CHECKED = "GBX_RUN_CHECKED"
    CONSUMED = "GBX_RUN_CONSUMED"
    STARTED = "GBX_RUN_STARTED"
    COMPLETED = "GBX_RUN_COMPLETED"
    ISSUED = "GBX_ENTITLEMENT_ISSUED"
    REDEEMED = "GBX_SEAL_REDEEMED"
