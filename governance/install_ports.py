"""What the installer (``governance.services.installs`` and friends) needs from the apps that
sit above identity, handed in by their ``AppConfig.ready`` as ``governance.audit`` is:

- ``EntitlementsConfig.ready`` → ``use_entitlements``: the governance entitlement of a holder
  (the ownership wallet, in the organization) — its id and status; and of many holders at
  once (the heartbeats of a group commit);
- ``EvidenceConfig.ready`` → ``use_evidence``: append an event to a device's hash chain, sign
  with Mandate's Ed25519 key (packages, renewal bundles), and the published Ed25519 keys.
"""

from collections.abc import Callable
from dataclasses import dataclass

from django.core.exceptions import ImproperlyConfigured


@dataclass(frozen=True)
class HeldEntitlement:
    entitlement_id: str  # "" when the holder has none
    status: str  # active | inactive | expired


@dataclass(frozen=True)
class Signed:
    kid: str
    signature: bytes


_entitlement_of: Callable[[str, str, str], HeldEntitlement] | None = None
_entitlements_of: Callable[[list[tuple[str, str]], str], dict] | None = None
_append: Callable[..., None] | None = None
_sign: Callable[[bytes], Signed] | None = None
_public_keys: Callable[[], list[dict]] | None = None
_active_kid: Callable[[], str] | None = None


def use_entitlements(
    entitlement_of: Callable[[str, str, str], HeldEntitlement],
    *,
    entitlements_of: Callable[[list[tuple[str, str]], str], dict],
) -> None:
    global _entitlement_of, _entitlements_of
    _entitlement_of, _entitlements_of = entitlement_of, entitlements_of


def use_evidence(
    *,
    append: Callable[..., None],
    sign: Callable[[bytes], Signed],
    public_keys: Callable[[], list[dict]],
    active_kid: Callable[[], str],
) -> None:
    global _append, _sign, _public_keys, _active_kid
    _append, _sign, _public_keys, _active_kid = append, sign, public_keys, active_kid


def _wired(port, who: str):
    if port is None:
        raise ImproperlyConfigured(f"the installer's ports are not wired: {who}.ready wires them")
    return port


def entitlement_of(organization_id, holder: str, plan_id: str) -> HeldEntitlement:
    """The holder's status entitlement under ``plan_id`` in the organization."""
    return _wired(_entitlement_of, "EntitlementsConfig")(str(organization_id), holder, plan_id)


def entitlements_of(holders: list[tuple[str, str]], plan_id: str) -> dict[tuple[str, str], HeldEntitlement]:
    """The status entitlements under ``plan_id`` of several (organization id, holder) pairs,
    read together (one query), by the pairs as given."""
    return _wired(_entitlements_of, "EntitlementsConfig")(holders, plan_id)


def record_device_event(
    device_chain_id: str, event_type: str, payload: dict, performer_id: str, *, performer_type: str = "wallet"
) -> None:
    """Append one event to a device's hash chain (and the ledger), in the caller's transaction.
    The performer is a wallet unless named otherwise (an admin issuing a renewal bundle)."""
    _wired(_append, "EvidenceConfig")(device_chain_id, event_type, payload, performer_id, performer_type)


def sign(data: bytes) -> Signed:
    """Sign ``data`` with Mandate's active Ed25519 key."""
    return _wired(_sign, "EvidenceConfig")(data)


def active_kid() -> str:
    """The id of the Ed25519 key ``sign`` uses now."""
    return _wired(_active_kid, "EvidenceConfig")()


def public_keys() -> list[dict]:
    """Mandate's Ed25519 public keys as JWKs, current and retired (so old signatures verify)."""
    return _wired(_public_keys, "EvidenceConfig")()
