"""Authority evaluation (MIDAS ``POST /v1/evaluate``).

The whole decision is computed in memory against the organization's authority snapshot,
then written at once: the envelope's audit events in one insert and the envelope in
another, in one transaction. Idempotency rides on the unique (organization,
request_source, request_id) constraint: a duplicate's insert fails, the transaction
rolls back, and the stored envelope answers instead — no pre-read on the hot path.
"""

import hashlib
import json
import uuid
from dataclasses import dataclass, field

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from envelopes.choices import EnvelopeKind, EnvelopeState, Outcome
from envelopes.evaluation.authority import Decision, decide
from envelopes.evaluation.snapshot import AuthoritySnapshot, authority_snapshot, cached_snapshot
from envelopes.models import Envelope
from envelopes.services.decide import announce
from envelopes.state import StateWalk
from evidence.canonical import canonical_json
from evidence.services.chain import EventDraft, draft_rows, rows_json, store_rows
from governance.errors import Conflict, Invalid, Unavailable
from governance.group_commit import prepared_cursor
from governance.token_cache import StaleToken


@dataclass
class EvaluationRequest:
    surface_id: str
    agent_id: str
    confidence: float
    request_source: str = "api"
    request_id: str = ""
    process_id: str = ""
    consequence: dict | None = None
    context: dict = field(default_factory=dict)

    def canonical(self) -> dict:
        """What identifies the request for idempotency (request_id generated when omitted)."""
        return {
            "surface_id": self.surface_id,
            "agent_id": self.agent_id,
            "confidence": self.confidence,
            "request_source": self.request_source,
            "request_id": self.request_id,
            "process_id": self.process_id,
            "consequence": self.consequence,
            "context": self.context,
        }


def request_hash(request: EvaluationRequest) -> str:
    return hashlib.sha256(canonical_json(request.canonical())).hexdigest()


RESPONSE_KEYS = ("outcome", "reason", "envelope_id", "explanation", "policy_mode", "policy_reference", "policy_skipped")


def as_sent(stored: dict) -> dict:
    """A stored response in the order it was first sent (a JSON column keeps no key order)."""
    ordered = {key: stored[key] for key in RESPONSE_KEYS if key in stored}
    ordered.update((key, value) for key, value in stored.items() if key not in ordered)
    return ordered


def _response(envelope_id, decision: Decision) -> dict:
    return {
        "outcome": decision.outcome,
        "reason": decision.reason,
        "envelope_id": str(envelope_id),
        "explanation": decision.explanation_text,
        "policy_mode": "rego" if decision.policy_evaluated else "none",
        "policy_reference": decision.policy_reference,
        "policy_skipped": not decision.policy_evaluated,
    }


def validate_structure(request: EvaluationRequest, snapshot: AuthoritySnapshot, now) -> None:
    """process_id rules (Invalid), before any evaluation is recorded."""
    if not request.process_id:
        if settings.MANDATE_STRUCTURAL_MODE == "enforced":
            raise Invalid("process_id is required in enforced structural mode")
        return
    if request.process_id not in snapshot.processes:
        raise Invalid(f"process {request.process_id!r} not found")
    versions = snapshot.surfaces.get(request.surface_id)
    if versions:
        surface = snapshot.active_surface(request.surface_id, now) or versions[0]
        if surface.process_key != request.process_id:
            raise Invalid(f"surface {request.surface_id!r} does not belong to process {request.process_id!r}")


@dataclass
class PlannedEvaluation:
    """One evaluation decided in memory: the envelope's fields and its event rows, not yet
    written."""

    envelope: dict  # Envelope field (attname): value
    events: list  # rows from evidence.services.chain.draft_rows
    response: dict


def plan_evaluation(
    organization_id, request: EvaluationRequest, raw: str, submitted_hash: str, performer_id: str, snapshot, now
) -> PlannedEvaluation:
    """Decide against ``snapshot`` and build what recording writes (no queries)."""
    validate_structure(request, snapshot, now)
    envelope_id = str(uuid.uuid4())  # random: people tell envelopes apart by their first 8 digits
    walk = StateWalk(EnvelopeState.RECEIVED)
    drafts = [
        EventDraft(
            "ENVELOPE_CREATED",
            {"state": walk.state, "request_source": request.request_source, "request_id": request.request_id},
            "principal",
            performer_id,
        ),
        EventDraft("EVALUATION_STARTED", {"state": walk.to(EnvelopeState.EVALUATING)}),
    ]
    decision = decide(request, snapshot, now, drafts)
    if decision.outcome == Outcome.ESCALATE:
        recorded = walk.to(EnvelopeState.ESCALATED)
        drafts.append(
            EventDraft(
                "OUTCOME_RECORDED", {"outcome": decision.outcome, "reason_code": decision.reason, "state": recorded}
            )
        )
        drafts.append(EventDraft("ESCALATION_PENDING", {"state": walk.to(EnvelopeState.AWAITING_REVIEW)}))
    else:
        recorded = walk.to(EnvelopeState.OUTCOME_RECORDED)
        drafts.append(
            EventDraft(
                "OUTCOME_RECORDED", {"outcome": decision.outcome, "reason_code": decision.reason, "state": recorded}
            )
        )
        drafts.append(EventDraft("ENVELOPE_CLOSED", {"state": walk.to(EnvelopeState.CLOSED)}))
    for draft in drafts:
        draft.occurred_at = now
    events = draft_rows(envelope_id, drafts)
    stamp = now.isoformat()  # every timestamp of the evaluation is ``now``; written as text once
    for event in events:
        event["occurred_at"] = stamp
    response = _response(envelope_id, decision)
    envelope = {
        "id": envelope_id,
        "organization_id": str(organization_id),
        "kind": EnvelopeKind.EVALUATION.value,
        "state": walk.state,
        "request_source": request.request_source,
        "request_id": request.request_id,
        "submitted_raw": raw,
        "submitted_hash": submitted_hash,
        "received_at": stamp,
        "surface_id": request.surface_id,
        "surface_version": decision.surface_version,
        "profile_id": decision.profile_key,
        "profile_version": decision.profile_version,
        "agent_id": request.agent_id,
        "grant_id": decision.grant_key,
        "structure": decision.structure,
        "outcome": decision.outcome,
        "reason_code": decision.reason,
        "evaluated_at": stamp,
        "explanation": decision.explanation,
        "response": response,
        "audit_event_ids": [e["id"] for e in events],
        "first_event_hash": events[0]["hash"],
        "final_event_hash": events[-1]["hash"],
        "created_at": stamp,
        "updated_at": stamp,
        "closed_at": stamp if walk.state == EnvelopeState.CLOSED else None,
    }
    return PlannedEvaluation(envelope, events, response)


_envelope_defaults: dict | None = None


def _envelope_row(fields: dict) -> dict:
    """Every Envelope column (``jsonb_populate_record`` leaves absent ones NULL): the
    model's defaults, then ``fields``."""
    global _envelope_defaults
    if _envelope_defaults is None:
        _envelope_defaults = {f.column: f.get_default() for f in Envelope._meta.concrete_fields}
    row = dict(_envelope_defaults)
    row.update(fields)
    return row


RECORD_SQL = "SELECT mandate_record_evaluations(%s::jsonb)"


def record_many(items) -> list[dict]:
    """Record several planned evaluations in one statement and one commit (envelopes
    migration 0003); ``items`` are (planned, revision, token). One status per item."""
    payload = [
        {
            "envelope": _envelope_row(planned.envelope),
            "events": planned.events,
            "revision": revision,
            "token": token,
        }
        for planned, revision, token in items
    ]
    with prepared_cursor() as cursor:
        cursor.execute(RECORD_SQL, [rows_json(payload)])
        (result,) = cursor.fetchone()
    return json.loads(result) if isinstance(result, str | bytes) else result


def record_one(planned: PlannedEvaluation, revision: int, token: dict | None) -> dict:
    """One statement and one commit for this evaluation alone."""
    return record_many([(planned, revision, token)])[0]


def _record_orm(organization, request, planned: PlannedEvaluation, submitted_hash: str) -> dict:
    """The portable path (SQLite): the envelope and its events in one transaction."""
    try:
        with transaction.atomic():
            Envelope(**planned.envelope).save(force_insert=True)
            store_rows(planned.events)
    except IntegrityError:
        stored = replay(organization, request, submitted_hash)
        if stored is None:  # the conflict was something else: let it surface
            raise
        return stored
    return planned.response


def _announce_escalation(organization_id, planned: PlannedEvaluation) -> None:
    """An escalation waits for a person from its commit on: tell the live inboxes. (Here,
    not ``on_commit``: on the hot path this runs on the event loop, after the group commit.)"""
    if planned.envelope["state"] == EnvelopeState.AWAITING_REVIEW:
        announce(organization_id, [planned.envelope["id"]])


LOAD = "load"  # evaluation_steps needs the snapshot re-read at the current revision
RECORD = "record"  # evaluation_steps needs (planned, revision) written; send back the status


def evaluation_steps(organization_id, request: EvaluationRequest, raw: str, performer_id: str, snapshot, checked):
    """The evaluation on Postgres as a generator that does no I/O itself (the sync service
    and the hot path's declaration, ``envelopes/evaluation/fastroute.py``, drive it). It
    yields ``(LOAD,)`` for a snapshot checked against the current revision and
    ``(RECORD, planned, revision)`` for the recording statement's status; it returns the
    response body.

    ``snapshot`` may be the cached one, not checked (``checked`` False): the recording
    statement refuses it if the revision moved (``stale``) and the request is decided
    again; an Invalid from the process rules is only trusted on a checked snapshot.
    """
    if not request.request_id:
        request.request_id = str(uuid.uuid4())
    submitted_hash = request_hash(request)
    for _attempt in range(5):
        now = timezone.now()
        try:
            planned = plan_evaluation(organization_id, request, raw, submitted_hash, performer_id, snapshot, now)
        except Invalid:
            if checked:
                raise
            snapshot, checked = (yield (LOAD,)), True
            continue
        result = yield (RECORD, planned, snapshot.revision)
        status = result["status"]
        if status == "recorded":
            _announce_escalation(organization_id, planned)
            return planned.response
        if status == "stale":
            snapshot, checked = (yield (LOAD,)), True
            continue
        if status == "unauthenticated":
            raise StaleToken()
        if result.get("submitted_hash") is None:
            continue  # the conflicting row went away: try again
        if result["submitted_hash"] != submitted_hash:
            raise Conflict("request_id already used with a different payload")
        return as_sent(result["response"])
    raise Unavailable("the authority snapshot kept changing; retry")


def evaluate(organization, request: EvaluationRequest, raw: str, performer_id: str, *, token=None) -> dict:
    """Evaluate and record; return the response body (the stored one for a replay).

    On Postgres the cached authority snapshot is used without reading the revision, and
    the one statement that records the evaluation checks it (``evaluation_steps``).
    ``token`` ({"id", "roles"}) makes that statement also check the caller's API token
    still stands (StaleToken otherwise).
    """
    organization_id = organization.pk
    if connection.vendor != "postgresql":
        if not request.request_id:
            request.request_id = str(uuid.uuid4())
        submitted_hash = request_hash(request)
        snapshot = authority_snapshot(organization_id)
        planned = plan_evaluation(organization_id, request, raw, submitted_hash, performer_id, snapshot, timezone.now())
        response = _record_orm(organization, request, planned, submitted_hash)
        if response is planned.response:  # recorded now, not a replay
            transaction.on_commit(lambda: _announce_escalation(organization_id, planned))
        return response
    snapshot, checked = cached_snapshot(organization_id)
    steps = evaluation_steps(organization_id, request, raw, performer_id, snapshot, checked)
    reply = None
    while True:
        try:
            step = steps.send(reply)
        except StopIteration as finished:
            return finished.value
        loading = step[0] == LOAD
        reply = authority_snapshot(organization_id) if loading else record_one(step[1], step[2], token)


def replay(organization, request: EvaluationRequest, submitted_hash: str) -> dict | None:
    """The stored response for this (request_source, request_id); Conflict if the payload differs."""
    existing = (
        Envelope.objects.filter(
            organization=organization, request_source=request.request_source, request_id=request.request_id
        )
        .only("submitted_hash", "response")
        .first()
    )
    if existing is None:
        return None
    if existing.submitted_hash != submitted_hash:
        raise Conflict("request_id already used with a different payload")
    return as_sent(existing.response)
