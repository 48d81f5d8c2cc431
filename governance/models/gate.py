"""The action gate's identity records: leases issued, the gate's shared state (drain and
revocation epoch), operator keys, and DPoP proof ids seen (when Redis is not configured).
The rules that use them live in ``governance/gate/`` (docs/gate.md)."""

import uuid

from django.db import models


class GateLease(models.Model):
    """A lease issued by ``POST /v1/leases``: who asked, for which agent, with what scopes and
    budgets, bound to which DPoP key (``jkt``) and revocation epoch. The JWT itself is not
    kept; a lease verifies only while its row exists."""

    lease_jti = models.CharField(max_length=64, unique=True)
    session_id = models.CharField(max_length=64, unique=True)
    agent_id = models.CharField(max_length=256, db_index=True)
    identity = models.CharField(
        max_length=120, help_text="Who asked: token:<id>, person:<id>, channel:<id>, operator:<name>, or open."
    )
    organization = models.ForeignKey("governance.Organization", on_delete=models.CASCADE, related_name="+")
    scopes = models.JSONField(default=list)
    budgets = models.JSONField(null=True, blank=True)
    jkt = models.CharField(max_length=64, help_text="RFC 7638 thumbprint of the agent's DPoP key (cnf.jkt).")
    epoch = models.PositiveBigIntegerField()
    kid = models.CharField(max_length=80, help_text="The signing key's id (the JWT header's kid).")
    issued_at = models.DateTimeField()
    expires_at = models.DateTimeField(db_index=True)

    class Meta:
        ordering = ["-issued_at"]
        verbose_name = "gate lease"

    def __str__(self):
        return f"{self.lease_jti} ({self.agent_id})"


class GateState(models.Model):
    """The one row of the gate's shared state: every process of the deployment reads it
    (through a cache of at most a second) and changes it under a row lock."""

    SINGLETON = 1

    id = models.PositiveSmallIntegerField(primary_key=True, default=SINGLETON, editable=False)
    epoch = models.PositiveBigIntegerField(default=0)
    epoch_advanced_at = models.DateTimeField(null=True, blank=True)
    epoch_advanced_by = models.CharField(max_length=200, blank=True)
    draining = models.BooleanField(default=False)
    drain_started_at = models.DateTimeField(null=True, blank=True)
    drain_started_by = models.CharField(max_length=200, blank=True)

    class Meta:
        verbose_name = "gate state"
        verbose_name_plural = "gate state"
        constraints = [models.CheckConstraint(condition=models.Q(id=1), name="gate_state_singleton")]

    def __str__(self):
        return f"epoch {self.epoch}{', draining' if self.draining else ''}"


class OperatorKey(models.Model):
    """An operator's API key (``mdo_<prefix>_<secret>``), sent as ``Authorization: DPoP <key>``
    with a proof made by the key pair whose thumbprint is ``jkt``. Only a SHA-256 of the
    secret is stored."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    name = models.CharField(max_length=200, unique=True)
    organization = models.ForeignKey("governance.Organization", on_delete=models.CASCADE, related_name="+")
    key_prefix = models.CharField(max_length=16, unique=True, editable=False)
    key_hash = models.CharField(max_length=64, editable=False)
    jkt = models.CharField(max_length=64, help_text="RFC 7638 thumbprint of the operator's DPoP public key.")
    created_at = models.DateTimeField(auto_now_add=True)
    created_by = models.CharField(max_length=200, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["name"]
        verbose_name = "operator key"

    def __str__(self):
        return f"{self.name} (mdo_{self.key_prefix}_…)"


class DpopReplay(models.Model):
    """A DPoP proof id (``jti``) already used, kept until it could no longer be presented
    (its ``iat`` window has passed). Used when no Redis is configured."""

    jti = models.CharField(max_length=256, primary_key=True)
    expires_at = models.DateTimeField(db_index=True)

    class Meta:
        verbose_name = "DPoP proof seen"
        verbose_name_plural = "DPoP proofs seen"
