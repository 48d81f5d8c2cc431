"""What the gate's identity side announces, inside the transaction that did it, so the app
that keeps the gate's ledger (above governance) records it atomically.

- ``lease_issued(lease=GateLease)``: a lease was issued (``POST /v1/leases``).
- ``gate_state_changed(change, by, state, previous_epoch=None)``: ``change`` is
  ``drain_started``, ``drain_ended`` or ``epoch_advanced``; ``state`` the new ``GateSnapshot``.
"""

from django.dispatch import Signal

lease_issued = Signal()
gate_state_changed = Signal()
