"""A lease session's budget: the counters its lease's ``budgets`` set (``max_calls``, and
``max_cost_usd_cents`` which the SDK may send and nothing debits yet), debited atomically
before dispatch — one conditional UPDATE, so concurrent calls can never take the balance below
zero — and credited back when the call fails before anything was dispatched."""

from dataclasses import dataclass

from django.db.models import F

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


def debit(session_id: str, budgets: dict | None) -> bool:
    """Take one call from the session's budget; ``budget_exhausted`` when none is left.
    True when something was debited (so ``credit`` gives it back on failure)."""
    if not budgets or budgets.get("max_calls") is None:
        return False
    taken = SessionBudget.objects.filter(session_id=session_id, calls_used__lt=F("max_calls")).update(
        calls_used=F("calls_used") + 1
    )
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
