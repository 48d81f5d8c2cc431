import uuid

from django.db import models
from django.db.models import F, Q
from django.db.models.fields.json import KT

from evidence.choices import KeyAlgorithm, KeyStatus

# The action gate's ledger events (``evidence.services.gate_events``): event types start with
# this, and the indexes behind ``GET /v1/audit/events`` cover only them.
GATE_EVENT_PREFIX = "GATE_"
GATE_EVENTS = Q(event_type__startswith=GATE_EVENT_PREFIX)


def _gate_index(name: str, *keys: str) -> models.Index:
    """A partial index over gate events: the payload keys, then the listing's order."""
    return models.Index(
        *(KT(f"payload__{key}") for key in keys),
        F("occurred_at"),
        F("ledger_seq"),
        name=name,
        condition=GATE_EVENTS,
    )


class AuditEvent(models.Model):
    """One append-only, hash-chained event.

    Two chains run through every row: the per-subject chain (``chain_id``,
    ``sequence_no``, ``prev_hash``, ``hash``) and the ledger-wide chain across all rows
    (``ledger_seq``, ``ledger_prev_hash``, ``ledger_hash``). See docs/evidence.md.
    On Postgres a trigger refuses UPDATE and DELETE on this table.
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    chain_id = models.CharField(max_length=255)
    sequence_no = models.PositiveIntegerField()
    event_type = models.CharField(max_length=80)
    performer_type = models.CharField(max_length=40)
    performer_id = models.CharField(max_length=255)
    payload = models.JSONField(default=dict)
    occurred_at = models.DateTimeField(db_index=True)
    prev_hash = models.CharField(max_length=64, blank=True)
    hash = models.CharField(max_length=64)
    ledger_seq = models.BigIntegerField(unique=True)
    ledger_prev_hash = models.CharField(max_length=64, blank=True)
    ledger_hash = models.CharField(max_length=64)

    class Meta:
        ordering = ["ledger_seq"]
        # A plain index on event_type (db_index=True would add a second, LIKE-only index
        # on Postgres that no query uses, and every insert pays for each index).
        indexes = [
            models.Index(fields=["event_type"], name="evidence_event_type_idx"),
            # GET /v1/audit/events: each filter is an index range already in the listing's
            # order (newest first), so a page reads only its own rows (docs/gate.md).
            _gate_index("evidence_gate_time_idx"),
            _gate_index("evidence_gate_trace_idx", "trace_id"),
            _gate_index("evidence_gate_session_idx", "session_id"),
            _gate_index("evidence_gate_action_idx", "action_id"),
            _gate_index("evidence_gate_principal_idx", "principal"),
            _gate_index("evidence_gate_decision_idx", "decision"),
        ]
        constraints = [
            models.UniqueConstraint(fields=["chain_id", "sequence_no"], name="unique_chain_position"),
        ]

    def __str__(self):
        return f"{self.chain_id}#{self.sequence_no} {self.event_type}"


class LedgerHead(models.Model):
    """The tip of the ledger-wide chain; its row lock serializes appends so chains never fork."""

    id = models.PositiveSmallIntegerField(primary_key=True, default=1)
    seq = models.BigIntegerField(default=0)
    hash = models.CharField(max_length=64, blank=True)

    def __str__(self):
        return f"ledger head #{self.seq}"


class SigningKey(models.Model):
    """A platform signing key. The private half is encrypted at rest and never leaves
    ``evidence.services.keys``; retired keys stay published so old signatures verify."""

    kid = models.CharField(max_length=80, unique=True)
    algorithm = models.CharField(max_length=10, choices=KeyAlgorithm.choices)
    status = models.CharField(max_length=10, choices=KeyStatus.choices, default=KeyStatus.ACTIVE)
    public_jwk = models.JSONField()
    private_key_encrypted = models.TextField(editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    retired_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["algorithm", "-created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["algorithm"],
                condition=models.Q(status=KeyStatus.ACTIVE),
                name="one_active_key_per_algorithm",
            )
        ]

    def __str__(self):
        return f"{self.kid} ({self.algorithm}, {self.status})"


class ControlPlaneAuditRecord(models.Model):
    """Resource-centric trail of control-plane changes (``GET /v1/controlplane/audit``)."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    organization_id = models.UUIDField(null=True, blank=True, db_index=True)
    resource_kind = models.CharField(max_length=40)
    resource_id = models.CharField(max_length=255)
    resource_version = models.PositiveIntegerField(null=True, blank=True)
    action = models.CharField(max_length=40)
    actor = models.CharField(max_length=255)
    occurred_at = models.DateTimeField(auto_now_add=True, db_index=True)
    summary = models.TextField(blank=True)
    details = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["-occurred_at"]
        indexes = [models.Index(fields=["resource_kind", "resource_id"])]

    def __str__(self):
        return f"{self.action} {self.resource_kind}/{self.resource_id}"


class AdminAuditRecord(models.Model):
    """Platform administrative actions (``GET /v1/platform/admin-audit``)."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    organization_id = models.UUIDField(null=True, blank=True, db_index=True)
    occurred_at = models.DateTimeField(auto_now_add=True, db_index=True)
    action = models.CharField(max_length=60, db_index=True)
    outcome = models.CharField(max_length=10, default="success")
    actor_type = models.CharField(max_length=20)
    actor_id = models.CharField(max_length=255, blank=True)
    target_type = models.CharField(max_length=40, blank=True)
    target_id = models.CharField(max_length=255, blank=True)
    request_id = models.CharField(max_length=255, blank=True)
    client_ip = models.CharField(max_length=64, blank=True)
    required_permission = models.CharField(max_length=80, blank=True)
    details = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["-occurred_at"]

    def __str__(self):
        return f"{self.action} ({self.outcome})"


class Receipt(models.Model):
    """The action gate's signed record of one execution (LatchGate's receipt).

    ``result_hash`` is ``sha256:`` + hex SHA-256 of the RFC 8785 form of every other field
    but the signature and its kid; ``receipt_signature`` is hex Ed25519 over the ASCII bytes
    of ``result_hash`` (``evidence.services.receipts``, docs/gate.md). On Postgres a trigger
    refuses UPDATE, DELETE and TRUNCATE: receipts are append-only.
    """

    receipt_id = models.CharField(max_length=64, primary_key=True)
    grant_id = models.CharField(max_length=64)
    trace_id = models.CharField(max_length=64)
    action_id = models.CharField(max_length=128)
    session_id = models.CharField(max_length=64, null=True, blank=True)
    provider_module_digest = models.CharField(max_length=100)
    provider_receipt = models.JSONField()
    normalized_result = models.JSONField()
    verification_outcome = models.JSONField()
    effect_evidence = models.JSONField(default=list)
    result_hash = models.CharField(max_length=71)
    receipt_signature = models.CharField(max_length=128, blank=True)
    signing_key_id = models.CharField(max_length=80, blank=True)
    started_at = models.DateTimeField()
    finished_at = models.DateTimeField()
    failure_class = models.CharField(max_length=40, null=True, blank=True)

    class Meta:
        ordering = ["-receipt_id"]  # UUIDv7 ids: newest first
        # A plain index (db_index=True would add a LIKE-only one on Postgres that no query
        # uses; migration 0008 drops the one Django adds for the primary key, too).
        indexes = [models.Index(fields=["trace_id"], name="evidence_receipt_trace_idx")]

    def __str__(self):
        return f"{self.receipt_id} ({self.action_id})"
