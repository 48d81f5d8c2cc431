"""The gate's shared state: drain and the revocation epoch, one row in the database.

Every process of the deployment sees the same drain and epoch (LatchGate keeps both per
process and loses them on restart). Changes take the row lock; readers go through a cache
of at most ``CACHE_SECONDS``, so the execute hot path does not query per call, and a change
made in another process is seen within that second (at once in the process that made it).
Each change is announced with ``governance.gate.signals.gate_state_changed`` inside its
transaction, so the ledger event lands with it.
"""

import threading
import time
from dataclasses import dataclass
from datetime import datetime

from django.db import transaction
from django.utils import timezone

from governance.gate.signals import gate_state_changed
from governance.models import GateState

CACHE_SECONDS = 1.0


@dataclass(frozen=True)
class GateSnapshot:
    """The ``GateState`` row as read (immutable, shared between threads)."""

    epoch: int
    draining: bool
    drain_started_at: datetime | None = None
    drain_started_by: str = ""
    epoch_advanced_at: datetime | None = None
    epoch_advanced_by: str = ""

    @classmethod
    def of(cls, row: GateState) -> "GateSnapshot":
        return cls(
            epoch=row.epoch,
            draining=row.draining,
            drain_started_at=row.drain_started_at,
            drain_started_by=row.drain_started_by,
            epoch_advanced_at=row.epoch_advanced_at,
            epoch_advanced_by=row.epoch_advanced_by,
        )


_cached: tuple[GateSnapshot, float] | None = None
_lock = threading.Lock()


def _remember(snapshot: GateSnapshot) -> GateSnapshot:
    global _cached
    with _lock:
        _cached = (snapshot, time.monotonic())
    return snapshot


def forget_cached_state() -> None:
    global _cached
    with _lock:
        _cached = None


def _row(*, lock: bool) -> GateState:
    rows = GateState.objects.select_for_update() if lock else GateState.objects
    row, _ = rows.get_or_create(pk=GateState.SINGLETON)
    return row


def gate_state(max_age: float = CACHE_SECONDS) -> GateSnapshot:
    """The gate's state, read at most ``max_age`` seconds ago (0: read now)."""
    cached = _cached
    if cached is not None and time.monotonic() - cached[1] < max_age:
        return cached[0]
    return _remember(GateSnapshot.of(_row(lock=False)))


def _changed(change: str, row: GateState, by: str, **details) -> GateSnapshot:
    snapshot = GateSnapshot.of(row)
    gate_state_changed.send(sender=GateState, change=change, by=by, state=snapshot, **details)
    # This process reads the change at once; threads that re-read before the commit are
    # corrected when it lands.
    forget_cached_state()
    transaction.on_commit(forget_cached_state)
    return snapshot


@transaction.atomic
def start_drain(by: str) -> tuple[bool, GateSnapshot]:
    """Stop new leases and action calls in every process. ``(already_draining, state)``;
    idempotent: a second call changes nothing."""
    row = _row(lock=True)
    if row.draining:
        return True, GateSnapshot.of(row)
    row.draining, row.drain_started_at, row.drain_started_by = True, timezone.now(), by
    row.save(update_fields=["draining", "drain_started_at", "drain_started_by"])
    return False, _changed("drain_started", row, by)


@transaction.atomic
def end_drain(by: str) -> tuple[bool, GateSnapshot]:
    """Accept leases and calls again (the drain is persisted, so it outlives restarts until
    ended). ``(was_draining, state)``."""
    row = _row(lock=True)
    if not row.draining:
        return False, GateSnapshot.of(row)
    row.draining, row.drain_started_at, row.drain_started_by = False, None, ""
    row.save(update_fields=["draining", "drain_started_at", "drain_started_by"])
    return True, _changed("drain_ended", row, by)


@transaction.atomic
def advance_epoch(by: str) -> tuple[int, int]:
    """Revoke every outstanding lease (and grant) at once: ``(previous, current)`` epoch."""
    row = _row(lock=True)
    previous = row.epoch
    row.epoch, row.epoch_advanced_at, row.epoch_advanced_by = previous + 1, timezone.now(), by
    row.save(update_fields=["epoch", "epoch_advanced_at", "epoch_advanced_by"])
    _changed("epoch_advanced", row, by, previous_epoch=previous)
    return previous, row.epoch
