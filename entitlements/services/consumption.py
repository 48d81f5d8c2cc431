"""Consumes written many at a time, for the hot path (``entitlements/fastroute.py``): per item
exactly what ``runs.consume`` does, each item's outcome its own, the batch in one transaction.

``mandate_consume_runs`` (migration 0002) re-checks each caller's token, takes each run (the
run row, the conditional decrement) and, holding the ledger lock from then on, reads the run
chains' tails; the ``GBX_RUN_CONSUMED`` events are drafted here after those tails and appended
with ``mandate_append_events``; the commit releases the lock. BEGIN, two statements, COMMIT,
whatever the batch's size. Postgres only: the DRF view's ``runs.consume`` is the portable path.
"""

import functools
import json
import uuid
from dataclasses import dataclass

from django.core.exceptions import ImproperlyConfigured
from django.db import connection, transaction
from django.utils import timezone

try:
    from django.db.backends.postgresql.base import ServerBindingCursor
except (ImportError, ImproperlyConfigured):  # no psycopg 3: SQLite only
    ServerBindingCursor = None

from entitlements.choices import RunEvent, RunState
from entitlements.models import Run
from entitlements.models.runs import run_chain_id
from entitlements.services.evidence import run_step
from entitlements.services.holders import Holder
from evidence.services.chain import draft_rows, rows_json

CONSUME_SQL = "SELECT mandate_consume_runs(%s::jsonb, %s)"
APPEND_SQL = "SELECT count(*) FROM mandate_append_events(%s::jsonb)"  # evidence migration 0004


@dataclass(frozen=True)
class Consumption:
    """One consume to write: the holder and run_id, and the caller's token as it was cached
    (``CachedToken.check``) with the email or username the principal was made from; the
    statement re-checks both."""

    holder: Holder
    run_id: str
    token: dict
    principal_name: str


@functools.cache
def _run_defaults() -> dict:
    """Every Run column the model gives a default (``jsonb_populate_record`` leaves absent
    ones NULL); the id and the balance are the statement's."""
    return {
        field.column: field.get_default()
        for field in Run._meta.concrete_fields
        if field.column not in ("id", "entitlement_id")
    }


def _run_row(item: Consumption, consumed_at: str) -> dict:
    return {
        **_run_defaults(),
        "id": str(uuid.uuid4()),
        "organization_id": item.holder.organization_id,
        "principal": item.holder.principal,
        "run_id": item.run_id,
        "state": RunState.CONSUMED.value,
        "consumed_at": consumed_at,
    }


def consume_many(items: list[Consumption]) -> list[dict]:
    """Consume a run for each item; one result per item, in order: ``{"status": "consumed",
    "entitlement_id", "runs_remaining"}``, or ``{"status": s}`` with s ``exhausted`` (402:
    no usable balance), ``conflict`` (409: the run_id was consumed before) or
    ``unauthenticated`` (the token no longer stands), for which nothing was written."""
    now = timezone.now()
    consumed_at = now.isoformat()
    payload = [
        {
            "run": _run_row(item, consumed_at),
            "token": item.token,
            "principal_name": item.principal_name,
            "chain_id": run_chain_id(item.holder.organization_id, item.holder.principal, item.run_id),
        }
        for item in items
    ]
    with transaction.atomic(), _prepared_cursor() as cursor:
        cursor.execute(CONSUME_SQL, [rows_json(payload), now])
        (answer,) = cursor.fetchone()
        results = json.loads(answer) if isinstance(answer, str | bytes) else answer
        events = []
        for item, result in zip(items, results, strict=True):
            if result["status"] != "consumed":
                continue
            chain, drafts = run_step(
                item.holder,
                item.run_id,
                RunEvent.CONSUMED.value,  # a plain str: the event hash's fast path
                {"entitlement_id": result["entitlement_id"], "runs_remaining": result["runs_remaining"]},
            )
            events += draft_rows(chain, drafts, result.pop("sequence_no"), result.pop("prev_hash"))
        if events:  # linked into the ledger under the lock the first statement took
            cursor.execute(APPEND_SQL, [rows_json(events)])
            (appended,) = cursor.fetchone()
            assert appended == len(events)
    return results


class _PreparedCursor(ServerBindingCursor if ServerBindingCursor is not None else object):
    """Server-side parameters (the batch's JSON goes as is, not quoted into the SQL text) and
    a prepared statement per connection (parsed and planned once)."""

    def execute(self, query, params=None, *, prepare=None, binary=None):
        return super().execute(query, params, prepare=True, binary=binary)


def _prepared_cursor():
    connection.ensure_connection()
    return connection._prepare_cursor(_PreparedCursor(connection.connection))
