"""The action gate's rows (LatchGate): a held action waiting for a person (an Envelope of kind
``action`` with its stored plan), each execution's record, and each lease session's budget
counters. docs/gate.md."""

from django.db import models


class GateApprovalState(models.TextChoices):
    PENDING = "pending"
    CLAIMED = "claimed"  # approved, the stored plan executing: nobody else may take it
    APPROVED = "approved"
    DENIED = "denied"
    EXPIRED = "expired"
    FAILED = "failed"  # approved, but executing the stored plan failed


GATE_APPROVAL_FINAL = frozenset(
    {GateApprovalState.APPROVED, GateApprovalState.DENIED, GateApprovalState.EXPIRED, GateApprovalState.FAILED}
)


class GateApproval(models.Model):
    """A held action. The plan is stored as it was when the action was held (``plan_hash``
    over it); approving executes the stored plan, never the live manifest. Kept after it is
    decided, for forensics."""

    envelope = models.OneToOneField(
        "envelopes.Envelope", primary_key=True, on_delete=models.CASCADE, related_name="gate_approval"
    )
    approval_id = models.CharField(max_length=64, unique=True)
    trace_id = models.CharField(max_length=64, db_index=True)
    action_id = models.CharField(max_length=128, db_index=True)
    action_version = models.CharField(max_length=64)
    risk_level = models.CharField(max_length=10)
    agent_id = models.CharField(max_length=255, db_index=True)
    session_id = models.CharField(max_length=64, db_index=True)
    lease_jti = models.CharField(max_length=64)
    epoch = models.PositiveIntegerField(default=0)  # the revocation epoch it was held in
    hold_reason = models.CharField(max_length=500)
    plan = models.JSONField()
    plan_hash = models.CharField(max_length=80)
    request_body = models.JSONField()
    request_hash = models.CharField(max_length=80)
    policy_version = models.CharField(max_length=64, blank=True)
    budget_snapshot = models.JSONField(default=dict, blank=True)
    state = models.CharField(max_length=10, choices=GateApprovalState.choices, default=GateApprovalState.PENDING)
    expires_at = models.DateTimeField()
    decided_by = models.CharField(max_length=255, blank=True)
    operator_binding = models.CharField(max_length=128, blank=True)  # the approver's DPoP jkt, when any
    deny_reason = models.CharField(max_length=500, blank=True)
    learn_domain = models.CharField(max_length=255, blank=True)
    learn_path = models.CharField(max_length=1024, blank=True)
    receipt_id = models.CharField(max_length=64, blank=True)
    failure = models.CharField(max_length=500, blank=True)
    created_at = models.DateTimeField()
    decided_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["state", "-created_at"], name="gate_approval_state_new")]
        verbose_name = "held action"


class GateExecution(models.Model):
    """One execution of an action (direct, or an approval's stored plan): what ran, under which
    grant, and its receipt. Written in the transaction that writes the receipt and the ledger
    event."""

    trace_id = models.CharField(max_length=64, primary_key=True)
    organization = models.ForeignKey("governance.Organization", on_delete=models.PROTECT, related_name="+")
    grant_id = models.CharField(max_length=64, unique=True)
    receipt_id = models.CharField(max_length=64, unique=True)
    approval_id = models.CharField(max_length=64, blank=True)
    action_id = models.CharField(max_length=128, db_index=True)
    agent_id = models.CharField(max_length=255)
    session_id = models.CharField(max_length=64, db_index=True)
    request_hash = models.CharField(max_length=80)
    plan_hash = models.CharField(max_length=80)
    epoch = models.PositiveIntegerField()
    verification_outcome = models.CharField(max_length=40)
    duration_ms = models.PositiveIntegerField()
    runtime = models.JSONField(default=dict)  # duration_ms, exit_code, fuel_consumed
    created_at = models.DateTimeField()


class SessionBudget(models.Model):
    """A lease session's budget counters (the lease's ``budgets``), debited atomically before
    dispatch and credited back when nothing was dispatched."""

    session_id = models.CharField(max_length=64, primary_key=True)
    max_calls = models.PositiveIntegerField(null=True, blank=True)
    calls_used = models.PositiveIntegerField(default=0)
    max_cost_usd_cents = models.PositiveIntegerField(null=True, blank=True)
    cost_used_usd_cents = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)
