"""The policy data operators manage: grants per principal (with sinks derived from the
granted actions' declared side effects, never set by hand) and the approval allowlist.

Each change locks the state row, writes, moves ``policy_version`` and records the change
(audit record + ledger event) in one transaction. Errors are ``GateError`` with LatchGate's
admin codes; the API edge renders them.
"""

import re
from dataclasses import dataclass

from django.db import transaction

from controlplane.choices import ActionRisk
from controlplane.gate import audit
from controlplane.gate.registry import Registry, registry
from controlplane.gate.state import bump, locked_state
from controlplane.models import ApprovalAllowlistEntry, PolicyGrant, PolicyPrincipal, PolicyState
from governance.errors import GateError

WILDCARD = PolicyPrincipal.WILDCARD
MAX_PRINCIPAL = 253
MAX_ACTIONS_PER_REQUEST = 100
MAX_ALLOWLIST_ID = 128
ACTION_ID = re.compile(r"\A[a-zA-Z0-9][a-zA-Z0-9._-]{0,127}\Z")
# Agent ids as leases carry them (``agent-ops``, ``agent:test-agent``, an email); no '/' since
# a principal is also a URL path segment.
PRINCIPAL = re.compile(r"\A[A-Za-z0-9][A-Za-z0-9._:@+-]*\Z")
ALLOWLIST_ID = re.compile(r"\A[A-Za-z0-9_:.@+-]+\Z")


@dataclass(frozen=True)
class PrincipalEntry:
    principal: str
    actions: tuple[str, ...]
    sinks: tuple[str, ...]
    inherits_wildcard: bool = False

    def as_wire(self) -> dict:
        return {"principal": self.principal, "actions": list(self.actions), "sinks": list(self.sinks)}


def sinks_of(actions, catalogue: Registry) -> list[str]:
    """The side effects the actions declare (actions no longer in the catalogue add none)."""
    sinks = set()
    for action_id in actions:
        manifest = catalogue.get(action_id)
        if manifest is not None:
            sinks.update(manifest.declared_side_effects)
    return sorted(sinks)


def rederive_sinks(catalogue: Registry) -> bool:
    """Recompute every principal's sinks against ``catalogue`` (a reload changed what the
    actions declare); True if any changed. Inside the reload's transaction."""
    changed = []
    for principal in PolicyPrincipal.objects.prefetch_related("grants"):
        sinks = sinks_of((grant.action_id for grant in principal.grants.all()), catalogue)
        if sinks != principal.sinks:
            principal.sinks = sinks
            changed.append(principal)
    PolicyPrincipal.objects.bulk_update(changed, ["sinks"])
    return bool(changed)


# --- validation ------------------------------------------------------------------------------


def valid_principal(name) -> str:
    if not isinstance(name, str) or not (name == WILDCARD or (len(name) <= MAX_PRINCIPAL and PRINCIPAL.match(name))):
        raise GateError(
            400,
            "invalid_principal",
            reason=f"principal must be '*' or 1-{MAX_PRINCIPAL} characters of letters, digits and . _ : @ + -",
        )
    return name


def valid_actions(actions) -> list[str]:
    if not isinstance(actions, list) or not actions:
        raise GateError(400, "empty_actions", reason="at least one action is required")
    if len(actions) > MAX_ACTIONS_PER_REQUEST:
        raise GateError(400, "too_many_actions", reason=f"at most {MAX_ACTIONS_PER_REQUEST} actions per request")
    for action_id in actions:
        if not isinstance(action_id, str) or not ACTION_ID.match(action_id):
            raise GateError(400, "invalid_action_id", reason=f"not an action id: {str(action_id)[:130]!r}")
    return list(dict.fromkeys(actions))


def _valid_allowlist_id(value, label: str) -> str:
    if not isinstance(value, str) or not value or len(value) > MAX_ALLOWLIST_ID or not ALLOWLIST_ID.match(value):
        raise GateError(
            400,
            "invalid_input",
            reason=f"{label} must be 1-{MAX_ALLOWLIST_ID} characters of letters, digits and _ - : . @ +",
        )
    return value


# --- reading ---------------------------------------------------------------------------------


def _entry(principal: PolicyPrincipal) -> PrincipalEntry:
    return PrincipalEntry(
        principal.name,
        tuple(sorted(grant.action_id for grant in principal.grants.all())),
        tuple(principal.sinks),
        principal.inherits_wildcard,
    )


def policy_version() -> int:
    return PolicyState.objects.filter(pk=1).values_list("policy_version", flat=True).first() or 0


def overview() -> dict:
    """``GET /v1/admin/policy``: every principal's actions and sinks, and the allowlist."""
    principals = {}
    for principal in PolicyPrincipal.objects.prefetch_related("grants").order_by("name"):
        entry = _entry(principal)
        principals[entry.principal] = {
            "actions": list(entry.actions),
            "sinks": list(entry.sinks),
            "inherits_wildcard": entry.inherits_wildcard,
        }
    allowlist: dict[str, dict[str, bool]] = {}
    for action_id, agent_id in ApprovalAllowlistEntry.objects.order_by("action_id", "agent_id").values_list(
        "action_id", "agent_id"
    ):
        allowlist.setdefault(action_id, {})[agent_id] = True
    return {"policy_version": str(policy_version()), "principals": principals, "allowlist": allowlist}


def principal_detail(name: str) -> dict:
    """``GET /v1/admin/policy/{principal}`` with the granted actions by risk level."""
    valid_principal(name)
    principal = PolicyPrincipal.objects.prefetch_related("grants").filter(name=name).first()
    if principal is None:
        raise GateError(404, "principal_not_found")
    entry = _entry(principal)
    catalogue = registry()
    breakdown: dict[str, list[str]] = {level: [] for level in ActionRisk.values}
    unregistered = []
    for action_id in entry.actions:
        manifest = catalogue.get(action_id)
        if manifest is None:
            unregistered.append(action_id)
        else:
            breakdown[manifest.risk_level].append(action_id)
    if unregistered:
        breakdown["unregistered"] = unregistered
    return {**entry.as_wire(), "inherits_wildcard": entry.inherits_wildcard, "risk_breakdown": breakdown}


# --- changing ----------------------------------------------------------------------------------


def grant(principal: str, actions, *, actor: audit.Actor, inherits_wildcard: bool | None = None) -> PrincipalEntry:
    """Add ``actions`` to the principal's grants (creating its entry); every action must be
    in the catalogue (400 ``unknown_action``)."""
    valid_principal(principal)
    actions = valid_actions(actions)
    if inherits_wildcard is not None and not isinstance(inherits_wildcard, bool):
        raise GateError(400, "invalid_request", reason="inherits_wildcard must be true or false")
    if inherits_wildcard and principal == WILDCARD:
        raise GateError(400, "invalid_request", reason="the wildcard principal cannot inherit from itself")
    catalogue = registry()
    for action_id in actions:
        if action_id not in catalogue:
            raise GateError(400, "unknown_action", reason=f"'{action_id}' is not in the loaded catalogue")
    with transaction.atomic():
        state = locked_state()
        entry, _ = PolicyPrincipal.objects.get_or_create(name=principal)
        before = set(entry.grants.values_list("action_id", flat=True))
        added = [action_id for action_id in actions if action_id not in before]
        PolicyGrant.objects.bulk_create(
            [PolicyGrant(principal=entry, action_id=action_id, granted_by=actor.name) for action_id in added]
        )
        wildcard_changed = inherits_wildcard is not None and inherits_wildcard != entry.inherits_wildcard
        if wildcard_changed:
            entry.inherits_wildcard = inherits_wildcard
        entry.sinks = sinks_of(before | set(added), catalogue)
        entry.save()
        result = _entry(PolicyPrincipal.objects.prefetch_related("grants").get(pk=entry.pk))
        if added or wildcard_changed:
            state = bump(state, "policy")
            audit.record(
                actor,
                audit.POLICY_GRANT,
                resource_id=principal,
                details={
                    "principal": principal,
                    "granted": added,
                    "actions": list(result.actions),
                    "sinks": list(result.sinks),
                    "inherits_wildcard": result.inherits_wildcard,
                    "policy_version": state.policy_version,
                },
            )
    return result


def revoke(principal: str, actions, *, actor: audit.Actor) -> PrincipalEntry:
    """Remove ``actions`` from the principal's grants; sinks are recomputed from what remains
    and an entry left with no action is removed. Revoking what was never granted changes
    nothing."""
    valid_principal(principal)
    actions = valid_actions(actions)
    catalogue = registry()  # before the lock: a first load takes it too
    with transaction.atomic():
        state = locked_state()
        entry = PolicyPrincipal.objects.filter(name=principal).first()
        if entry is None:
            return PrincipalEntry(principal, (), ())
        removed = sorted(set(entry.grants.filter(action_id__in=actions).values_list("action_id", flat=True)))
        if not removed:
            return _entry(PolicyPrincipal.objects.prefetch_related("grants").get(pk=entry.pk))
        entry.grants.filter(action_id__in=removed).delete()
        remaining = sorted(entry.grants.values_list("action_id", flat=True))
        if remaining:
            entry.sinks = sinks_of(remaining, catalogue)
            entry.save()
            result = PrincipalEntry(principal, tuple(remaining), tuple(entry.sinks), entry.inherits_wildcard)
        else:
            entry.delete()
            result = PrincipalEntry(principal, (), ())
        state = bump(state, "policy")
        audit.record(
            actor,
            audit.POLICY_REVOKE,
            resource_id=principal,
            details={
                "principal": principal,
                "revoked": removed,
                "actions": list(result.actions),
                "sinks": list(result.sinks),
                "principal_removed": not remaining,
                "policy_version": state.policy_version,
            },
        )
    return result


def add_to_allowlist(action_id, agent_id, *, actor: audit.Actor) -> bool:
    """The (action, agent) pair skips the approval hold from now on; True if it was new.
    The action must be in the catalogue (404 ``action_not_found``): a typo must not leave a
    silent hole."""
    _valid_allowlist_id(action_id, "action_id")
    _valid_allowlist_id(agent_id, "agent_id")
    if action_id not in registry():
        raise GateError(404, "action_not_found")
    with transaction.atomic():
        state = locked_state()
        _, created = ApprovalAllowlistEntry.objects.get_or_create(
            action_id=action_id, agent_id=agent_id, defaults={"added_by": actor.name}
        )
        if created:
            state = bump(state, "policy")
            audit.record(
                actor,
                audit.ALLOWLIST_ADD,
                resource_id=f"{action_id}/{agent_id}",
                details={"action_id": action_id, "principal": agent_id, "policy_version": state.policy_version},
            )
    return created


def remove_from_allowlist(action_id, agent_id, *, actor: audit.Actor) -> None:
    """404 ``allowlist_entry_not_found`` when the pair is not on the allowlist."""
    _valid_allowlist_id(action_id, "action_id")
    _valid_allowlist_id(agent_id, "agent_id")
    with transaction.atomic():
        state = locked_state()
        deleted, _ = ApprovalAllowlistEntry.objects.filter(action_id=action_id, agent_id=agent_id).delete()
        if not deleted:
            raise GateError(404, "allowlist_entry_not_found")
        state = bump(state, "policy")
        audit.record(
            actor,
            audit.ALLOWLIST_REMOVE,
            resource_id=f"{action_id}/{agent_id}",
            details={"action_id": action_id, "principal": agent_id, "policy_version": state.policy_version},
        )
