"""How every process agrees on the gate's configuration.

Three parts change independently: the catalogue (manifests and the Rego source), the policy
data (grants, allowlist) and the learned targets. A change bumps its part's version on the
one ``PolicyState`` row under that row's lock and writes a fresh stamp. Each process keeps
what it built from a part in memory (``Loaded``) and rebuilds it when the part's stamp
differs from the row's; it reads the row at most every ``MANDATE_GATE_CONFIG_RECHECK_SECONDS``
(one small query), and at once after its own change commits.
"""

import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from django.conf import settings
from django.db import transaction
from django.db.models import F

from controlplane.models import PolicyState

PARTS = ("policy", "catalogue", "targets")
T = TypeVar("T")


@dataclass(frozen=True)
class Observed:
    policy_version: int
    policy_stamp: str
    catalogue_version: int
    catalogue_stamp: str
    targets_version: int
    targets_stamp: str

    def stamp(self, part: str) -> str:
        return getattr(self, f"{part}_stamp")


_FIELDS = [f"{part}_{kind}" for part in PARTS for kind in ("version", "stamp")]
_observed: Observed | None = None
_observed_at = 0.0
_observe_lock = threading.Lock()


def observe(*, fresh: bool = False) -> Observed:
    """The row's versions and stamps, read at most every recheck interval."""
    global _observed, _observed_at
    interval = settings.MANDATE_GATE_CONFIG_RECHECK_SECONDS
    now = time.monotonic()
    current = _observed
    if not fresh and current is not None and interval > 0 and now - _observed_at < interval:
        return current
    values = PolicyState.objects.filter(pk=1).values(*_FIELDS).first()
    observed = Observed(**values) if values else Observed(0, "", 0, "", 0, "")
    with _observe_lock:
        _observed, _observed_at = observed, now
    return observed


def forget_observation() -> None:
    """Make the next ``observe`` read the row (after this process changed it)."""
    global _observed
    _observed = None


def locked_state() -> PolicyState:
    """The state row, locked until the caller's transaction ends (created if missing).
    Every configuration change takes this lock first, so changes are serialized."""
    state = PolicyState.objects.select_for_update().filter(pk=1).first()
    if state is None:
        PolicyState.objects.bulk_create([PolicyState(pk=1)], ignore_conflicts=True)
        state = PolicyState.objects.select_for_update().get(pk=1)
    return state


def bump(state: PolicyState, *parts: str) -> PolicyState:
    """Move ``parts`` to their next version with fresh stamps (inside the caller's
    transaction, holding ``locked_state``); the processes' caches follow after the commit."""
    changes = {}
    for part in parts:
        changes[f"{part}_version"] = F(f"{part}_version") + 1
        changes[f"{part}_stamp"] = uuid.uuid4().hex
    PolicyState.objects.filter(pk=1).update(**changes)
    state.refresh_from_db()
    transaction.on_commit(forget_observation)
    return state


class Loaded(Generic[T]):
    """What this process built from one part of the configuration, rebuilt when the part's
    stamp moves. ``build(observed)`` reads the database and returns the value with the
    observation it reflects (a first load moves the stamp it was called with); ``install``
    puts a value built elsewhere (a reload that just committed) in place."""

    def __init__(self, part: str, build: Callable[[Observed], tuple[T, Observed]]):
        self.part = part
        self._build = build
        self._stamp: str | None = None
        self._value: T | None = None
        self._lock = threading.RLock()  # a build may install (a first load's commit)

    def get(self) -> T:
        observed = observe()
        stamp = observed.stamp(self.part)
        if self._stamp == stamp and self._value is not None:
            return self._value
        with self._lock:
            if self._stamp != stamp or self._value is None:
                value, observed = self._build(observed)
                self._value, self._stamp = value, observed.stamp(self.part)
            return self._value

    def install(self, stamp: str, value: T) -> None:
        with self._lock:
            self._stamp, self._value = stamp, value

    def forget(self) -> None:
        with self._lock:
            self._stamp, self._value = None, None
