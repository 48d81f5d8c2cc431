"""The action gate's catalogue and policy data (docs/gate.md, "Catalogue and policy").

The gate is one per deployment, as LatchGate is: manifests, grants, the approval allowlist
and learned targets are shared by every organization, and a principal is the agent id a
lease names (``sub``). Every change moves a version on ``PolicyState``; each process keeps
what it loaded in memory and reloads the part whose stamp moved.
"""

from django.db import models
from django.db.models import Q

from controlplane.choices import TargetSource


class PolicyState(models.Model):
    """One row (pk 1): what every process compares with what it has loaded.

    ``policy_version`` is the public number (``GET /v1/admin/policy``, decisions, held
    plans); the ``*_stamp`` columns are fresh random values written with each change, so a
    process never mistakes two different states for one (a counter can repeat after a
    rolled-back change). ``policy_source`` is the Rego the gate evaluates, as last loaded by
    a reload, so every process evaluates the same policy.
    """

    id = models.PositiveSmallIntegerField(primary_key=True, default=1)
    policy_version = models.BigIntegerField(default=0)
    policy_stamp = models.CharField(max_length=32, blank=True)
    catalogue_version = models.BigIntegerField(default=0)
    catalogue_stamp = models.CharField(max_length=32, blank=True)
    targets_version = models.BigIntegerField(default=0)
    targets_stamp = models.CharField(max_length=32, blank=True)
    policy_source = models.TextField(blank=True)
    reloaded_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = "gate policy state"

    def __str__(self):
        return f"policy v{self.policy_version}, catalogue v{self.catalogue_version}"


class ActionManifest(models.Model):
    """One version of an action's manifest, as validated at load; one active per action_id."""

    action_id = models.CharField(max_length=128)
    version = models.CharField(max_length=64)
    document = models.JSONField()  # the validated manifest as written (defaults are the code's)
    document_hash = models.CharField(max_length=71)  # sha256:<hex> of the JCS form with defaults filled in
    provider_module_digest = models.CharField(max_length=80)
    source = models.CharField(max_length=255)  # file:<name relative to the actions dir>
    loaded_at = models.DateTimeField()
    active = models.BooleanField(default=True)

    class Meta:
        ordering = ["action_id", "-loaded_at"]
        constraints = [
            models.UniqueConstraint(fields=["action_id"], condition=Q(active=True), name="one_active_manifest")
        ]

    def __str__(self):
        return f"{self.action_id} {self.version}" + ("" if self.active else " (inactive)")


class PolicyPrincipal(models.Model):
    """An ACL entry: an agent id, or ``*`` for every principal without an entry of its own.
    ``sinks`` are derived from the granted actions' declared side effects, never set."""

    WILDCARD = "*"

    name = models.CharField(max_length=253, unique=True)
    inherits_wildcard = models.BooleanField(default=False)
    sinks = models.JSONField(default=list, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        verbose_name = "gate principal"

    def __str__(self):
        return self.name


class PolicyGrant(models.Model):
    """The principal may call this action (subject to scopes, budget, sinks, approval)."""

    principal = models.ForeignKey(PolicyPrincipal, on_delete=models.CASCADE, related_name="grants")
    action_id = models.CharField(max_length=128)
    granted_by = models.CharField(max_length=255, blank=True)
    granted_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["principal__name", "action_id"]
        verbose_name = "gate grant"
        constraints = [models.UniqueConstraint(fields=["principal", "action_id"], name="unique_gate_grant")]

    def __str__(self):
        return f"{self.principal_id} → {self.action_id}"


class ApprovalAllowlistEntry(models.Model):
    """Calls of this action by this agent skip the approval hold (never a deny rule)."""

    action_id = models.CharField(max_length=128)
    agent_id = models.CharField(max_length=128)
    added_by = models.CharField(max_length=255, blank=True)
    added_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["action_id", "agent_id"]
        verbose_name_plural = "approval allowlist entries"
        constraints = [models.UniqueConstraint(fields=["action_id", "agent_id"], name="unique_allowlist_entry")]

    def __str__(self):
        return f"{self.action_id} / {self.agent_id}"


class LearnedTarget(models.Model):
    source = models.CharField(max_length=10, choices=TargetSource.choices)
    action_id = models.CharField(max_length=128)
    added_by = models.CharField(max_length=255)
    added_at = models.DateTimeField(auto_now_add=True)
    approval_id = models.CharField(max_length=64, null=True, blank=True)

    class Meta:
        abstract = True


class LearnedDomain(LearnedTarget):
    """A domain an action may reach beyond its manifest's allowed_domains."""

    domain = models.CharField(max_length=253)

    class Meta:
        ordering = ["action_id", "domain"]
        constraints = [models.UniqueConstraint(fields=["action_id", "domain"], name="unique_learned_domain")]

    def __str__(self):
        return f"{self.action_id}: {self.domain}"


class LearnedPath(LearnedTarget):
    """A path glob (relative to the session's fs_root) an fs action may use beyond its
    manifest's allowed_paths; the manifest's denied_paths still win."""

    path = models.CharField(max_length=1024)

    class Meta:
        ordering = ["action_id", "path"]
        constraints = [models.UniqueConstraint(fields=["action_id", "path"], name="unique_learned_path")]

    def __str__(self):
        return f"{self.action_id}: {self.path}"
