"""Step 16, and the ledger event of every refusal: what happened is written once, in one
transaction — the ledger event, the signed receipt and the execution row — or the caller
gets 500 ``evidence_persistence_failed`` and nothing half-written stays."""

import logging

from django.db import DatabaseError, InterfaceError, OperationalError, transaction

from envelopes.gate.steps.call import Call
from envelopes.models import GateExecution
from evidence.services.chain import append_events
from evidence.services.gate_events import gate_event
from evidence.services.receipts import issue_receipt
from governance.errors import GateError
from governance.gate.ids import new_id

logger = logging.getLogger("mandate.gate")


def write_evidence(call: Call, receipt_id: str):
    """The receipt, the execution row and the ``GATE_ACTION_CALL`` event, in the caller's
    transaction (the ledger event last: it holds the ledger's lock until the commit)."""
    result, verification = call.result, call.verification
    receipt = issue_receipt(
        receipt_id=receipt_id,
        grant_id=call.grant_id,
        provider_module_digest=call.plan.provider_module_digest,
        provider_receipt=result.output,
        normalized_result=result.normalized_result(),
        verification_outcome=verification.to_wire(),
        effect_evidence=list(result.effect_evidence),
        started_at=call.dispatched_at,
        finished_at=call.finished_at,
        failure_class=None if result.ok else result.failure.failure_class,
        trace_id=call.trace_id,
        action_id=call.action_id,
        session_id=call.lease.session_id,
    )
    GateExecution.objects.create(
        trace_id=call.trace_id,
        organization_id=call.lease.organization_id,
        grant_id=call.grant_id,
        receipt_id=receipt.receipt_id,
        approval_id=call.approval.approval_id if call.approval is not None else "",
        action_id=call.action_id,
        agent_id=call.lease.agent_id,
        session_id=call.lease.session_id,
        request_hash=call.request_hash,
        plan_hash=call.plan.plan_hash(),
        epoch=call.lease.epoch,
        verification_outcome=verification.outcome,
        duration_ms=result.duration_ms,
        runtime=result.runtime(),
        created_at=call.received_at,
    )
    event = gate_event(
        "GATE_ACTION_CALL",
        trace_id=call.trace_id,
        action_id=call.action_id,
        principal=call.lease.agent_id,
        session_id=call.lease.session_id,
        decision="allow" if result.ok else "error",
        grant_id=call.grant_id,
        grant_signature=call.grant_signature,
        receipt_id=receipt.receipt_id,
        request_hash=call.request_hash,
        verification_outcome=verification.outcome,
        epoch=call.lease.epoch,
        **({"approval_id": call.approval.approval_id} if call.approval is not None else {}),
    )
    # A direct call's trace is a new chain; an approved call's already holds its hold event.
    append_events(call.trace_id, [event], new_chain=call.approval is None)
    return receipt


def record(call: Call):
    """16. Evidence, then the answer: 200 with the receipt, or 502 when the action failed."""
    try:
        with transaction.atomic():
            receipt = write_evidence(call, new_id("rcpt"))
    except DatabaseError:
        logger.exception("gate: evidence not written [%s]", call.trace_id)
        raise GateError(500, "evidence_persistence_failed") from None
    if not call.result.ok:
        failed = GateError(502, "action_execution_failed")
        failed.recorded = True  # its ledger event is the call's own (decision "error")
        raise failed
    return 200, answer(call, receipt.receipt_id)


def answer(call: Call, receipt_id: str) -> dict:
    result, verification = call.result, call.verification
    body = {
        "trace_id": call.trace_id,
        "action_id": call.action_id,
        "grant_id": call.grant_id,
        "receipt_id": receipt_id,
        "output": result.output,
        "verification_outcome": verification.outcome,
        "verification": {
            "outcome": verification.outcome,
            "is_fully_successful": verification.is_fully_successful(result),
        },
        "runtime": result.runtime(),
    }
    if call.approval is not None:
        body["approval"] = {
            "approval_id": call.approval.approval_id,
            "approved_by": call.approval.decided_by,
            "operator_binding": call.approval.operator_binding or None,
        }
        if call.learned_domain:
            body["learned_domain"] = call.learned_domain
    return body


def as_refusal(failure: Exception) -> GateError:
    """Anything the pipeline raised, as the refusal it answers: a GateError is its own; the
    database away is 503 ``store_unavailable``; anything else (a bug) 500 ``internal_error``."""
    if isinstance(failure, GateError):
        return failure
    if isinstance(failure, OperationalError | InterfaceError):
        return GateError(503, "store_unavailable")
    return GateError(500, "internal_error")


def record_refusal(call: Call, refusal: GateError) -> None:
    """A refused call's ledger event (decision ``deny``, or ``error`` for a 5xx), on its trace."""
    decision = "error" if refusal.status >= 500 else "deny"
    details = {"error": refusal.code, "status": refusal.status}
    if refusal.deny_reason:
        details["reason"] = refusal.deny_reason
    event = gate_event(
        "GATE_ACTION_CALL",
        trace_id=call.trace_id,
        action_id=call.action_id or None,
        principal=call.principal,
        session_id=call.session_id,
        decision=decision,
        **details,
    )
    try:
        with transaction.atomic():
            append_events(call.trace_id, [event], new_chain=True)
    except DatabaseError:
        logger.exception("gate: refusal not written to the ledger [%s]", call.trace_id)
