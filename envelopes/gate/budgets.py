"""A lease session's budget: the counters its lease's ``budgets`` set (``max_calls``, and
``max_cost_usd_cents`` which the SDK may send and nothing debits yet), debited atomically
before dispatch — one conditional UPDATE, so concurrent calls can never take the balance below
zero — and credited back when the call fails before anything was dispatched."""

from dataclasses import dataclass

from django.db import connection
from django.db.models import F
from django.utils import timezone

from envelopes.models import SessionBudget
from governance.errors import GateError


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


def opened_snapshot(session_id: str, budgets: dict | None) -> BudgetSnapshot | None:
    """``open_budget`` then ``snapshot``: on Postgres one statement (the execute path pays
    one round trip for its budget, not three)."""
    if not budgets or connection.vendor != "postgresql":
        open_budget(session_id, budgets)
        return snapshot(session_id, budgets)
    table = connection.ops.quote_name(SessionBudget._meta.db_table)
    sql = (
        f"WITH opened AS (INSERT INTO {table} "  # noqa: S608 - a quoted name; values are parameters
        "(session_id, max_calls, calls_used, max_cost_usd_cents, cost_used_usd_cents, created_at) "
        "VALUES (%s, %s, 0, %s, 0, %s) ON CONFLICT (session_id) DO NOTHING RETURNING max_calls, calls_used) "
        f"SELECT max_calls, calls_used FROM opened UNION ALL "
        f"SELECT max_calls, calls_used FROM {table} WHERE session_id = %s LIMIT 1"
    )
    params = [session_id, budgets.get("max_calls"), budgets.get("max_cost_usd_cents"), timezone.now(), session_id]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        row = cursor.fetchone()
    if row is None:  # opened by a concurrent first call that committed after this statement began
        return snapshot(session_id, budgets)
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


def debit_if_counted(session_id: str) -> bool:
    """``debit`` for a session whose counters exist (an approved held call: its lease is not
    at hand, its session's counters are); True when one call was taken."""
    row = SessionBudget.objects.filter(session_id=session_id).values_list("max_calls", flat=True).first()
    if row is None:
        return False
    return debit(session_id, {"max_calls": row})
