"""Entitlements' evidence: each run's lifecycle is a hash chain of its own (from its first
check), and each entitlement's issuance and redemptions are one too; all of it in the
ledger-wide chain, appended in the transaction of the step it records."""

from entitlements.models.runs import run_chain_id
from entitlements.services.holders import Holder
from evidence.services.chain import EventDraft, append_events


def record_run_step(holder: Holder, run_id: str, event_type: str, payload: dict) -> None:
    chain = run_chain_id(holder.organization_id, holder.principal, run_id)
    append_events(chain, [_draft(holder, event_type, {"run_id": run_id, "principal": holder.principal, **payload})])


def record_entitlement_step(holder: Holder, entitlement_id: str, event_type: str, payload: dict) -> None:
    append_events(f"gbx-entitlement:{entitlement_id}", [_draft(holder, event_type, payload)])


def _draft(holder: Holder, event_type: str, payload: dict) -> EventDraft:
    # A plain str: the enum member would send the event through the slow RFC 8785 path.
    return EventDraft(str(event_type), payload, performer_type=holder.performer_type, performer_id=holder.principal)
