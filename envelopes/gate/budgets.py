"""A lease session's budget: the counters its lease's ``budgets`` set (``max_calls``, and
``max_cost_usd_cents`` which the SDK may send and nothing debits yet), opened when the lease is
issued (in its transaction), debited atomically before dispatch — one conditional UPDATE, so
concurrent calls can never take the balance below zero — and credited back when the call
fails before anything was dispatched. A lease with budgets whose counters are gone is refused
(``budget_session_not_found``), never given fresh ones."""

from dataclasses import dataclass

from django.db import connection
from django.db.models import F

from envelopes.models import SessionBudget
from governance.errors import GateError
from governance.gate.signals import lease_issued


@dataclass(frozen=True)
class BudgetSnapshot:
    max_calls: int | None
    calls_used: int

    @property
    def exhausted(self) -> bool:
        return self.max_calls is not None and self.calls_used >= self.max_calls

    def as_dict(self) -> dict:
        return {"max_calls": self.max_calls, "calls_used": self.calls_used}


def open_budget(session_id: str, budgets: dict | None) -> None:
    """The session's counters, created once from its lease's budgets (idempotent)."""
    if budgets:
        SessionBudget.objects.get_or_create(
            session_id=session_id,
            defaults={
                "max_calls": budgets.get("max_calls"),
                "max_cost_usd_cents": budgets.get("max_cost_usd_cents"),
            },
        )


def snapshot(session_id: str, budgets: dict | None) -> BudgetSnapshot | None:
    """The counters now; None for a lease without budgets. A lease that carries budgets
    whose session has no counters is refused (``budget_session_not_found``)."""
    if not budgets:
        return None
    row = SessionBudget.objects.filter(session_id=session_id).values_list("max_calls", "calls_used").first()
    if row is None:
        raise GateError(403, "budget_session_not_found")
    return BudgetSnapshot(*row)


def debit(session_id: str, budgets: dict | None) -> bool:
    """Take one call from the session's budget; ``budget_exhausted`` when none is left.
    True when something was debited (so ``credit`` gives it back on failure)."""
    if not budgets or budgets.get("max_calls") is None:
        return False
    table = connection.ops.quote_name(SessionBudget._meta.db_table)
    with connection.cursor() as cursor:  # the ORM's UPDATE costs more to build than to run
        cursor.execute(
            f"UPDATE {table} SET calls_used = calls_used + 1 "  # noqa: S608 - a quoted name
            "WHERE session_id = %s AND calls_used < max_calls",
            [session_id],
        )
        taken = cursor.rowcount
    if not taken:
        raise GateError(403, "budget_exhausted")
    return True


def credit(session_id: str) -> None:
    """Give back a call debited for a dispatch that never happened."""
    SessionBudget.objects.filter(session_id=session_id, calls_used__gt=0).update(calls_used=F("calls_used") - 1)


def on_lease_issued(sender, lease, **kwargs) -> None:
    open_budget(lease.session_id, lease.budgets)


def connect() -> None:
    lease_issued.connect(on_lease_issued, dispatch_uid="mandate-gate-lease-budget")
