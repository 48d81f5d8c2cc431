import uuid

from django.db import models

from envelopes.choices import EnvelopeKind, EnvelopeState, Outcome, ReviewDecision


class Envelope(models.Model):
    """One governed decision: an evaluation, an agent's approval request or a held action.

    The five MIDAS sections map onto columns: identity (id, request_source, request_id),
    submitted (submitted_raw, received_at), resolved (surface/profile/agent/grant and the
    structure snapshot), evaluation (outcome, reason_code, evaluated_at, explanation) and
    integrity (audit_event_ids, first/final event hash, submitted_hash). State changes go
    through ``envelopes.state`` only.
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    # No index of its own: the unique constraint and the indexes below all lead with it.
    organization = models.ForeignKey(
        "governance.Organization", on_delete=models.PROTECT, related_name="+", db_index=False
    )
    kind = models.CharField(max_length=20, choices=EnvelopeKind.choices, default=EnvelopeKind.EVALUATION)
    schema_version = models.CharField(max_length=10, default="1")
    state = models.CharField(max_length=20, choices=EnvelopeState.choices, default=EnvelopeState.RECEIVED)

    request_source = models.CharField(max_length=255)
    request_id = models.CharField(max_length=255)
    submitted_raw = models.TextField(help_text="The request body exactly as received.")
    submitted_hash = models.CharField(max_length=64)
    received_at = models.DateTimeField()

    surface_id = models.CharField(max_length=255, blank=True)
    surface_version = models.PositiveIntegerField(null=True, blank=True)
    profile_id = models.CharField(max_length=255, blank=True)
    profile_version = models.PositiveIntegerField(null=True, blank=True)
    agent_id = models.CharField(max_length=255, blank=True)
    grant_id = models.CharField(max_length=255, blank=True)
    structure = models.JSONField(default=dict, blank=True)

    outcome = models.CharField(max_length=30, choices=Outcome.choices, blank=True)
    reason_code = models.CharField(max_length=60, blank=True)
    evaluated_at = models.DateTimeField(null=True, blank=True)
    explanation = models.JSONField(default=dict, blank=True)
    response = models.JSONField(default=dict, blank=True, help_text="The response as first sent, replayed verbatim.")

    audit_event_ids = models.JSONField(default=list, blank=True)
    first_event_hash = models.CharField(max_length=64, blank=True)
    final_event_hash = models.CharField(max_length=64, blank=True)

    review_decision = models.CharField(max_length=10, choices=ReviewDecision.choices, blank=True)
    reviewer_id = models.CharField(max_length=255, blank=True)
    reviewer_kind = models.CharField(max_length=20, blank=True)
    review_notes = models.TextField(blank=True)
    reviewed_at = models.DateTimeField(null=True, blank=True)

    created_at = models.DateTimeField()
    updated_at = models.DateTimeField()
    closed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["organization", "request_source", "request_id"], name="unique_envelope_request"
            )
        ]
        indexes = [
            models.Index(fields=["organization", "state", "-created_at"]),
            models.Index(fields=["organization", "agent_id", "-created_at"]),
            models.Index(fields=["organization", "surface_id", "-created_at"]),
        ]

    def __str__(self):
        return f"{self.kind} {self.id} ({self.state})"

    @property
    def chain_id(self) -> str:
        return str(self.id)
