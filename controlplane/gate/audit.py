"""Every change to the gate's configuration leaves two records, in the transaction that makes
it: a control-plane audit record (``GET /v1/controlplane/audit``, kind ``gate_*``) and an
event in the ledger's hash chain (chain ``gate:config``; ``GET /v1/audit/events``)."""

from dataclasses import dataclass

from evidence.services.audit_trails import record_controlplane_change
from evidence.services.chain import append_event

CHAIN = "gate:config"


@dataclass(frozen=True)
class Actor:
    """Who changed the configuration: ``name`` for the audit record, the performer for the
    ledger, the organization the audit record is filed under (None: the platform's)."""

    name: str
    performer_type: str = "operator"
    performer_id: str = ""
    organization_id: str | None = None

    @classmethod
    def named(cls, name: str, performer_type: str = "operator") -> "Actor":
        return cls(name=name, performer_type=performer_type, performer_id=name)


SYSTEM = Actor("system", "system", "mandate")


@dataclass(frozen=True)
class Change:
    kind: str  # the audit record's resource_kind
    action: str
    event_type: str  # the ledger's


POLICY_GRANT = Change("gate_policy", "grant", "GATE_POLICY_GRANTED")
POLICY_REVOKE = Change("gate_policy", "revoke", "GATE_POLICY_REVOKED")
ALLOWLIST_ADD = Change("gate_allowlist", "add", "GATE_ALLOWLIST_ADDED")
ALLOWLIST_REMOVE = Change("gate_allowlist", "remove", "GATE_ALLOWLIST_REMOVED")
DOMAIN_ADD = Change("gate_domain", "add", "GATE_DOMAIN_LEARNED")
DOMAIN_REMOVE = Change("gate_domain", "remove", "GATE_DOMAIN_REMOVED")
DOMAIN_CLEAR = Change("gate_domain", "clear", "GATE_DOMAINS_CLEARED")
PATH_ADD = Change("gate_path", "add", "GATE_PATH_LEARNED")
PATH_REMOVE = Change("gate_path", "remove", "GATE_PATH_REMOVED")
PATH_CLEAR = Change("gate_path", "clear", "GATE_PATHS_CLEARED")
RELOAD = Change("gate_catalogue", "reload", "GATE_RELOADED")
RELOAD_FAILED = Change("gate_catalogue", "reload_failed", "GATE_RELOAD_FAILED")


def record(actor: Actor, change: Change, *, resource_id: str, details: dict, summary: str = "") -> None:
    """Call inside the transaction that makes the change."""
    record_controlplane_change(
        organization_id=actor.organization_id,
        kind=change.kind,
        resource_id=resource_id[:255],
        action=change.action,
        actor=actor.name,
        summary=summary,
        details=details,
    )
    append_event(
        CHAIN,
        change.event_type,
        {"resource_id": resource_id, **details, "actor": actor.name},
        performer_type=actor.performer_type,
        performer_id=actor.performer_id or actor.name,
    )
