"""The gate's Prometheus metrics (``GET /metrics``, operator auth): counters kept per process
as calls happen, gauges read from the database when scraped. Families follow LatchGate's:
action calls by action and outcome, DPoP and other refusals by code, policy decisions,
provider duration, budget exhaustion, ledger write errors, executions in flight, pending
approvals and their age, the webhook outbox. ``answered``/``failed`` turn one execute
answer into those counters (the execute route's hook, ``envelopes/gate/api/execute.py``)."""

import threading
from collections import Counter

from django.db.models import Min
from django.utils import timezone

DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

_lock = threading.Lock()
_calls: Counter = Counter()  # (action_id, outcome)
_refusals: Counter = Counter()  # code
_policy: Counter = Counter()  # result
_durations: Counter = Counter()  # bucket upper bound (inf last)
_duration_sum = [0.0, 0]
_ledger_errors = [0]
_in_flight = [0]

# Refusals that mean the policy said no (budget_exhausted: its budget rule, or the debit).
POLICY_DENIALS = frozenset({"policy_denied", "budget_exhausted"})
# Answers that got past the policy: it allowed the call.
POLICY_ALLOWED = frozenset({"action_execution_failed", "evidence_persistence_failed"})


def call_finished(action_id: str, outcome: str, duration_seconds: float | None = None) -> None:
    with _lock:
        _calls[(action_id, outcome)] += 1
        if duration_seconds is not None:
            _duration_sum[0] += duration_seconds
            _duration_sum[1] += 1
            for bound in DURATION_BUCKETS:
                if duration_seconds <= bound:
                    _durations[bound] += 1
            _durations[float("inf")] += 1


def refused(code: str) -> None:
    with _lock:
        _refusals[code] += 1


def policy_decided(result: str) -> None:
    with _lock:
        _policy[result] += 1


def ledger_write_failed() -> None:
    with _lock:
        _ledger_errors[0] += 1


def execution_started() -> None:
    with _lock:
        _in_flight[0] += 1


def execution_ended() -> None:
    with _lock:
        _in_flight[0] -= 1


def in_flight() -> int:
    """Executions running in this process now (the execute pipeline and approved plans)."""
    with _lock:
        return _in_flight[0]


# Refusals that come before the action is found in the catalogue (or at an unknown step): their
# calls are counted without the action id the caller sent, so nobody can grow the label set.
DPOP_CODES = frozenset(
    {
        "missing_auth_header",
        "invalid_lease",
        "lease_expired",
        "invalid_dpop",
        "replay_detected",
        "replay_cache_unavailable",
    }
)
BEFORE_LOOKUP = DPOP_CODES | {
    "rate_limit_exceeded",
    "draining",
    "action_not_found",
    "internal_error",
    "store_unavailable",
}


def action_label(action_id: str, code: str) -> str:
    return "" if code in BEFORE_LOOKUP else action_id


def outcome_of(status: int) -> str:
    """The ledger's decision word for an answer's status."""
    if status == 202:
        return "pending_approval"
    if status < 400:
        return "allow"
    return "error" if status >= 500 else "deny"


def answered(action_id: str, status: int, body: dict) -> None:
    """An execute call answered 200 or 202."""
    runtime = body.get("runtime") if isinstance(body, dict) else None
    duration = runtime.get("duration_ms") if isinstance(runtime, dict) else None
    call_finished(action_id, outcome_of(status), duration / 1000 if isinstance(duration, int | float) else None)
    policy_decided("hold" if status == 202 else "allow")


def failed(action_id: str, status: int, code: str) -> None:
    """An execute call refused or failed with ``code`` (``action_id``: see ``action_label``)."""
    call_finished(action_id, outcome_of(status))
    refused(code)
    if code in POLICY_DENIALS:
        policy_decided("deny")
    elif code in POLICY_ALLOWED:
        policy_decided("allow")
    if code == "evidence_persistence_failed":
        ledger_write_failed()


def _label(value: str) -> str:
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", " ")


def exposition() -> str:
    from envelopes.models import Delivery, GateApproval, GateApprovalState

    pending = GateApproval.objects.filter(state=GateApprovalState.PENDING, expires_at__gt=timezone.now())
    oldest = pending.aggregate(oldest=Min("created_at"))["oldest"]
    age = (timezone.now() - oldest).total_seconds() if oldest else 0.0
    outbox = Delivery.objects.filter(status="pending").count()
    lines = []

    def family(name, kind, help_text):
        lines.append(f"# TYPE {name} {kind}")
        lines.append(f"# HELP {name} {help_text}")

    with _lock:
        family("mandate_gate_action_calls", "counter", "Action calls by action and outcome.")
        for (action_id, outcome), n in sorted(_calls.items()):
            lines.append(
                f'mandate_gate_action_calls_total{{action_id="{_label(action_id)}",outcome="{_label(outcome)}"}} {n}'
            )
        family("mandate_gate_refusals", "counter", "Refused calls by error code (DPoP, lease, policy, budget...).")
        for code, n in sorted(_refusals.items()):
            lines.append(f'mandate_gate_refusals_total{{code="{_label(code)}"}} {n}')
        family("mandate_gate_dpop_rejections", "counter", "DPoP and lease rejections.")
        dpop = sum(n for code, n in _refusals.items() if code in DPOP_CODES)
        lines.append(f"mandate_gate_dpop_rejections_total {dpop}")
        family("mandate_gate_policy_decisions", "counter", "Policy decisions by result.")
        for result, n in sorted(_policy.items()):
            lines.append(f'mandate_gate_policy_decisions_total{{result="{_label(result)}"}} {n}')
        family("mandate_gate_budget_exhausted", "counter", "Calls refused for an exhausted budget.")
        lines.append(f"mandate_gate_budget_exhausted_total {_refusals.get('budget_exhausted', 0)}")
        family("mandate_gate_provider_duration_seconds", "histogram", "Provider execution time.")
        for bound in DURATION_BUCKETS:
            lines.append(f'mandate_gate_provider_duration_seconds_bucket{{le="{bound}"}} {_durations.get(bound, 0)}')
        lines.append(f'mandate_gate_provider_duration_seconds_bucket{{le="+Inf"}} {_durations.get(float("inf"), 0)}')
        lines.append(f"mandate_gate_provider_duration_seconds_sum {_duration_sum[0]:.6f}")
        lines.append(f"mandate_gate_provider_duration_seconds_count {_duration_sum[1]}")
        family("mandate_gate_audit_write_errors", "counter", "Ledger writes that failed.")
        lines.append(f"mandate_gate_audit_write_errors_total {_ledger_errors[0]}")
        family("mandate_gate_in_flight_executions", "gauge", "Executions running in this process.")
        lines.append(f"mandate_gate_in_flight_executions {_in_flight[0]}")
    family("mandate_gate_pending_approvals", "gauge", "Held actions waiting for a person.")
    lines.append(f"mandate_gate_pending_approvals {pending.count()}")
    family("mandate_gate_oldest_pending_approval_age_seconds", "gauge", "Age of the oldest waiting held action.")
    lines.append(f"mandate_gate_oldest_pending_approval_age_seconds {age:.3f}")
    family("mandate_gate_webhook_outbox_pending", "gauge", "Webhook deliveries not yet sent.")
    lines.append(f"mandate_gate_webhook_outbox_pending {outbox}")
    lines.append("# EOF")
    return "\n".join(lines) + "\n"
