from django.db import models

from envelopes.choices import (
    ADMIN_LEVEL,
    MANAGER_LEVEL,
    NO_DECISION_ROUTES,
    OnTimeout,
    RequestStatus,
    RequestType,
    ReturnMode,
    RiskLevel,
    Route,
    TweakStatus,
)


class ApprovalRequest(models.Model):
    """What an agent asks people through its channel (AIOS Govern's envelope). The
    Envelope it extends carries identity, state and the evidence chain."""

    envelope = models.OneToOneField(
        "envelopes.Envelope", primary_key=True, on_delete=models.CASCADE, related_name="approval_request"
    )
    channel = models.ForeignKey("envelopes.Channel", on_delete=models.PROTECT, related_name="requests")
    type = models.CharField(max_length=24, choices=RequestType.choices)
    title = models.CharField(max_length=300)
    summary = models.TextField(blank=True)
    risk_level = models.CharField(max_length=10, choices=RiskLevel.choices, default=RiskLevel.MEDIUM)
    payload = models.JSONField(default=dict, blank=True)
    approval_rule = models.JSONField(default=dict, blank=True)
    route = models.CharField(max_length=20, choices=Route.choices, default=Route.APPROVAL)
    team = models.ForeignKey("governance.Team", null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    bg_color = models.CharField(max_length=7, blank=True)
    badge = models.CharField(max_length=40, blank=True)
    accent_bar = models.CharField(max_length=40, blank=True)
    pulse = models.CharField(max_length=10, blank=True)
    top_sort = models.BooleanField(default=False)
    expires_at = models.DateTimeField(null=True, blank=True, db_index=True)
    on_timeout = models.CharField(max_length=16, choices=OnTimeout.choices, blank=True)
    escalation_level = models.PositiveSmallIntegerField(
        default=0, help_text="How many times a timeout re-routed it one level up (manager, then admins)."
    )
    tweak_allowed = models.BooleanField(default=False)
    parent = models.ForeignKey("self", null=True, blank=True, on_delete=models.PROTECT, related_name="children")
    return_mode = models.CharField(max_length=10, choices=ReturnMode.choices, default=ReturnMode.LONG_POLL)
    return_webhook = models.URLField(max_length=2000, blank=True)
    long_poll_timeout_seconds = models.PositiveIntegerField(default=60)
    ttl = models.DurationField(
        null=True,
        blank=True,
        help_text="The time the agent gave people (expires_at − submission); each escalation gets it anew.",
    )
    status = models.CharField(max_length=14, choices=RequestStatus.choices, default=RequestStatus.PENDING)
    decided_by = models.CharField(max_length=255, blank=True, help_text="A person's id, or 'system'.")
    decision_time = models.DateTimeField(null=True, blank=True)
    comments = models.TextField(blank=True)
    choice = models.JSONField(null=True, blank=True)
    input_text = models.TextField(blank=True)

    class Meta:
        ordering = ["-envelope__created_at"]
        indexes = [models.Index(fields=["status", "expires_at"])]

    def __str__(self):
        return self.title

    @property
    def is_fyi(self) -> bool:
        """A card to acknowledge rather than decide (an FYI route, or an informational request)."""
        return self.route in NO_DECISION_ROUTES or self.type == RequestType.INFORMATIONAL

    def next_escalation_level(self) -> int | None:
        """The rung an ``escalate`` timeout moves it to; None once the admins have had it.
        An owner without a manager skips straight to the admins."""
        if self.escalation_level >= ADMIN_LEVEL:
            return None
        if self.escalation_level < MANAGER_LEVEL and self.channel.owner.manager_id:
            return MANAGER_LEVEL
        return ADMIN_LEVEL


class Approval(models.Model):
    """One person's vote on a request (n_of_x and sequential rules count these)."""

    request = models.ForeignKey(ApprovalRequest, on_delete=models.CASCADE, related_name="approvals")
    person = models.ForeignKey("governance.Person", on_delete=models.PROTECT, related_name="+")
    approve = models.BooleanField()
    step = models.PositiveSmallIntegerField(default=0)
    comment = models.TextField(blank=True)
    at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["at"]
        constraints = [models.UniqueConstraint(fields=["request", "person"], name="one_vote_per_person")]


class Tweak(models.Model):
    """A person's "request changes" on a request that allows it."""

    id = models.UUIDField(primary_key=True, editable=False)
    request = models.ForeignKey(ApprovalRequest, on_delete=models.CASCADE, related_name="tweaks")
    request_text = models.TextField()
    requested_by = models.ForeignKey("governance.Person", on_delete=models.PROTECT, related_name="+")
    status = models.CharField(max_length=10, choices=TweakStatus.choices, default=TweakStatus.OPEN)
    created_at = models.DateTimeField(auto_now_add=True)
    closed_at = models.DateTimeField(null=True, blank=True)
    resolved_by = models.OneToOneField(
        ApprovalRequest, null=True, blank=True, on_delete=models.SET_NULL, related_name="resolves_tweak"
    )

    class Meta:
        ordering = ["-created_at"]
