"""Consumes written many at a time, for the hot path (``entitlements/fastroute.py``): per item
exactly what ``runs.consume`` does, each item's outcome its own, the batch in one statement and
one commit (``mandate_consume_runs``, migration 0002: the token re-checked, the run taken, its
``GBX_RUN_CONSUMED`` appended after its chain's tail under the ledger lock). Postgres only:
the DRF view's ``runs.consume`` is the portable path.
"""

import functools
import json
import uuid
from dataclasses import dataclass

from django.utils import timezone

from entitlements.choices import RunState
from entitlements.models import Run
from entitlements.models.runs import run_chain_id
from entitlements.services.holders import Holder
from evidence.canonical import format_timestamp
from evidence.ids import uuid7_strs
from evidence.services.chain import rows_json
from governance.group_commit import prepared_cursor

CONSUME_SQL = "SELECT mandate_consume_runs(%s::jsonb, %s, %s)"


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


def consume_many(items: list[Consumption]) -> list[dict]:
    """Consume a run for each item; one result per item, in order: ``{"status": "consumed",
    "entitlement_id", "runs_remaining"}``, or ``{"status": s}`` with s ``exhausted`` (402:
    no usable balance), ``conflict`` (409: the run_id was consumed before) or
    ``unauthenticated`` (the token no longer stands), for which nothing was written."""
    now = timezone.now()
    consumed_at = now.isoformat()
    defaults = _run_defaults()
    payload = [
        {
            "run": {
                **defaults,
                "id": str(uuid.uuid4()),
                "organization_id": item.holder.organization_id,
                "principal": item.holder.principal,
                "run_id": item.run_id,
                "state": RunState.CONSUMED.value,
                "consumed_at": consumed_at,
            },
            "token": item.token,
            "principal_name": item.principal_name,
            "chain_id": run_chain_id(item.holder.organization_id, item.holder.principal, item.run_id),
            "event_id": event_id,
            "performer_type": item.holder.performer_type,
        }
        for item, event_id in zip(items, uuid7_strs(len(items)), strict=True)
    ]
    with prepared_cursor() as cursor:
        cursor.execute(CONSUME_SQL, [rows_json(payload), now, format_timestamp(now)])
        (answer,) = cursor.fetchone()
    return json.loads(answer) if isinstance(answer, str | bytes) else answer
