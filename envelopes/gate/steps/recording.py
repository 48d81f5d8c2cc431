"""Step 16, and the ledger event of every refusal: what happened is written once, in one
transaction — the ledger event, the signed receipt and the execution row — or the caller
gets 500 ``evidence_persistence_failed`` and nothing half-written stays.

A call's evidence is prepared where the call runs (the receipt checked, hashed and signed,
the event hashed) and handed over as a ``Write``. On the hot path the route's group commit
gives ``record_evidence`` the evidence of every call waiting at that moment: on Postgres
one statement (``mandate_record_gate_calls``), its own transaction — the receipts, the
execution rows, then the ledger events last (the ledger's lock is held only until that
statement's commit, never across a round trip). When that statement fails,
the group commit writes each call's evidence alone, so one call's failure is its own.
Django's view (``drive``) writes each call's evidence alone with the same function."""

import logging
from dataclasses import dataclass

from django.db import DatabaseError, InterfaceError, OperationalError, connection, transaction

from envelopes.gate.steps.call import Call
from envelopes.models import GateExecution
from evidence.choices import KeyStatus
from evidence.models import Receipt
from evidence.services.chain import append_events, draft_rows, rows_json, store_rows
from evidence.services.gate_events import gate_event
from evidence.services.receipts import draft_receipt, receipt_rows_json, store_receipts, store_signed
from governance.errors import GateError
from governance.gate.ids import new_id
from governance.hotpath import Cached, Write

logger = logging.getLogger("mandate.gate")


@dataclass
class Evidence:
    """One call's evidence, ready to store: its ledger event (hashed; linked into the ledger
    when stored) and, for an execution, its signed receipt and its execution row."""

    trace_id: str
    events: list  # evidence.services.chain.draft_rows
    receipt: Receipt | None = None
    execution: dict | None = None  # the GateExecution row, by column
    # An approved call's event: its trace already holds the hold's event, so it is appended
    # after the chain's tail (read under the ledger lock) rather than drafted as a new chain.
    appended: list = None


def execution_evidence(call: Call, receipt_id: str) -> Evidence:
    """The receipt, the execution row and the ``GATE_ACTION_CALL`` event of an execution."""
    result, verification = call.result, call.verification
    receipt = draft_receipt(
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
    execution = {
        "trace_id": call.trace_id,
        "organization_id": str(call.lease.organization_id),
        "grant_id": call.grant_id,
        "receipt_id": receipt.receipt_id,
        "approval_id": call.approval.approval_id if call.approval is not None else "",
        "action_id": call.action_id,
        "agent_id": call.lease.agent_id,
        "session_id": call.lease.session_id,
        "request_hash": call.request_hash,
        "plan_hash": call.digest_of_plan(),
        "epoch": call.lease.epoch,
        "verification_outcome": str(verification.outcome),
        "duration_ms": result.duration_ms,
        "runtime": result.runtime(),
        "created_at": call.received_at,
    }
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
    if call.approval is not None:
        return Evidence(call.trace_id, [], receipt, execution, appended=[event])
    return Evidence(call.trace_id, draft_rows(call.trace_id, [event]), receipt, execution)


def refusal_evidence(call: Call, refusal: GateError) -> Evidence:
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
    return Evidence(call.trace_id, draft_rows(call.trace_id, [event]))


def store_evidence(items: list[Evidence]) -> None:
    """Store prepared evidence in the caller's transaction: receipts, execution rows, then the
    ledger events last (``append_events`` holds the ledger's lock until the commit)."""
    store_receipts([item.receipt for item in items if item.receipt is not None])
    insert_executions([item.execution for item in items if item.execution is not None])
    store_rows([row for item in items for row in item.events])
    for item in items:
        if item.appended:
            append_events(item.trace_id, item.appended)


def insert_executions(rows: list[dict]) -> None:
    """``GateExecution`` rows (by column): one statement on Postgres, without model instances."""
    if not rows:
        return
    if connection.vendor != "postgresql":
        GateExecution.objects.bulk_create([GateExecution(**row) for row in rows])
        return
    quote = connection.ops.quote_name
    table = quote(GateExecution._meta.db_table)
    columns = ", ".join(quote(name) for name in rows[0])
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {table} ({columns}) SELECT {columns} "  # noqa: S608 - quoted names; values are a parameter
            f"FROM jsonb_populate_recordset(NULL::{table}, %s::jsonb)",
            [rows_json(rows)],
        )


def record_evidence(items: list[Evidence]) -> list[Evidence]:
    """The execute route's recorder (``HotRoute.record``): the evidence of many calls in one
    transaction; each item's result is itself. On Postgres that is one statement
    (``mandate_record_gate_calls``, envelopes migration 0007), its own transaction unless the
    caller has one open (then a savepoint keeps a failure from breaking the caller's)."""
    if connection.vendor != "postgresql" or any(item.appended for item in items):
        with transaction.atomic():
            store_evidence(items)
    elif connection.in_atomic_block:
        with transaction.atomic():
            _record_in_one_statement(items)
    else:
        _record_in_one_statement(items)
    return items


_RECORD_GATE_CALLS = "SELECT mandate_record_gate_calls(%s::jsonb, %s::jsonb, %s::jsonb, %s, %s)"


def _record_in_one_statement(items: list[Evidence]) -> None:
    """Receipts, execution rows and ledger events of ``items`` (none appended to an existing
    trace) in one statement; the receipts only while their key is the active one."""
    executions = rows_json([item.execution for item in items if item.execution is not None])
    events = rows_json([row for item in items for row in item.events])

    def insert(receipts: list[Receipt], kid: str) -> bool:
        with connection.cursor() as cursor:
            cursor.execute(_RECORD_GATE_CALLS, [receipt_rows_json(receipts), executions, events, kid, KeyStatus.ACTIVE])
            return cursor.fetchone()[0]

    receipts = [item.receipt for item in items if item.receipt is not None]
    if receipts:
        store_signed(receipts, insert)
    else:
        insert([], "")


def write_evidence(call: Call, receipt_id: str) -> Receipt:
    """An execution's evidence in the caller's transaction (a held action's run, whose
    decision writes it); the stored receipt."""
    evidence = execution_evidence(call, receipt_id)
    store_evidence([evidence])
    return evidence.receipt


def record(call: Call):
    """16. Evidence, then the answer: 200 with the receipt, or 502 when the action failed."""
    evidence = yield Cached(execution_evidence, call, new_id("rcpt"))
    try:
        yield Write(evidence)
    except DatabaseError:
        logger.exception("gate: evidence not written [%s]", call.trace_id)
        raise GateError(500, "evidence_persistence_failed") from None
    if not call.result.ok:
        failed = GateError(502, "action_execution_failed")
        failed.recorded = True  # its ledger event is the call's own (decision "error")
        raise failed
    return 200, answer(call, evidence.receipt.receipt_id)


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


def record_refusal(call: Call, refusal: GateError):
    """A refused call's ledger event; a failure to write it is logged, the refusal stands."""
    try:
        yield Write(refusal_evidence(call, refusal))
    except DatabaseError:
        logger.exception("gate: refusal not written to the ledger [%s]", call.trace_id)
