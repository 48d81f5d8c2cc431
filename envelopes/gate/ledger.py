"""The gate's own ledger events for what its identity side does (issued leases, drain, the
revocation epoch): ``governance.gate.signals`` announces them inside the transaction that did
it, and these receivers append the event in that same transaction. Admin actions go on the
chain ``gate:admin``; a lease's on its session's chain."""

from evidence.services.chain import append_events
from evidence.services.gate_events import gate_event
from governance.gate.signals import gate_state_changed, lease_issued

EVENT_OF_CHANGE = {
    "drain_started": "GATE_ADMIN_DRAIN",
    "drain_ended": "GATE_ADMIN_DRAIN_ENDED",
    "epoch_advanced": "GATE_ADMIN_REVOKE_ALL",
}


def on_lease_issued(sender, lease, **kwargs) -> None:
    event = gate_event(
        "GATE_LEASE_ISSUED",
        trace_id=lease.session_id,
        action_id=None,
        principal=lease.agent_id,
        session_id=lease.session_id,
        decision="allow",
        lease_jti=lease.lease_jti,
        identity=lease.identity,
        scopes=list(lease.scopes or []),
        epoch=lease.epoch,
        expires_at=lease.expires_at.isoformat(),
    )
    append_events(f"gate:session:{lease.session_id}", [event], new_chain=True)


def on_state_changed(sender, change, by, state, **details) -> None:
    extra = {k: v for k, v in details.items() if isinstance(v, str | int | bool | None)}
    event = gate_event(
        EVENT_OF_CHANGE.get(change, "GATE_ADMIN_CHANGE"),
        trace_id="gate:admin",
        action_id=None,
        principal=by,
        session_id=None,
        decision=None,
        change=change,
        epoch=state.epoch,
        draining=state.draining,
        **extra,
    )
    append_events("gate:admin", [event])


def connect() -> None:
    lease_issued.connect(on_lease_issued, dispatch_uid="mandate-gate-lease-ledger")
    gate_state_changed.connect(on_state_changed, dispatch_uid="mandate-gate-state-ledger")
