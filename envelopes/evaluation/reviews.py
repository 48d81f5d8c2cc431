"""Resolving escalations: a person approves or rejects an envelope awaiting review.

``POST /v1/reviews`` and the admin inbox both call ``review_envelope``. It locks the
envelope row (``SELECT ... FOR UPDATE``) so two reviewers deciding at once cannot both
succeed, moves the envelope awaiting_review → closed through the one state machine, and
appends ESCALATION_REVIEWED and ENVELOPE_CLOSED to the envelope's chain in the same
transaction. The evaluation outcome stays ``escalate``: the decision is the review's.
"""

from django.db import transaction
from django.utils import timezone

from envelopes.choices import EnvelopeState, ReviewDecision
from envelopes.models import Envelope
from envelopes.services.queries import parse_envelope_id
from envelopes.state import IllegalTransition, check_transition
from evidence.services.chain import EventDraft, append_events
from governance.api.errors import APIError
from governance.choices import Role
from governance.control_characters import has_control_characters

# Who may decide an escalation (API and admin alike).
REVIEW_ROLES = (Role.PLATFORM_ADMIN, Role.GOVERNANCE_REVIEWER)
REVIEW_PERMISSION = "reviews:write"

# The words MIDAS clients send for each decision.
DECISION_WORDS = {
    "approve": ReviewDecision.APPROVED,
    "accept": ReviewDecision.APPROVED,
    "reject": ReviewDecision.REJECTED,
    "deny": ReviewDecision.REJECTED,
}

DECISION_RULE = "must be one of: approve, accept, reject, deny"
MAX_REVIEWER_LENGTH = 255


def parse_decision(value) -> ReviewDecision:
    """``approve``/``accept`` or ``reject``/``deny`` (any case); 400 for anything else."""
    decision = DECISION_WORDS.get(str(value or "").strip().lower()) if isinstance(value, str) else None
    if decision is None:
        raise APIError(400, f"decision {DECISION_RULE}")
    return decision


def reviewer_name(reviewer) -> str:
    """The recorded reviewer id: a person's username, or the given name (1–255 characters,
    no control characters)."""
    name = getattr(reviewer, "username", reviewer)
    name = str(name or "").strip()
    if not name or len(name) > MAX_REVIEWER_LENGTH or has_control_characters(name):
        raise APIError(400, "reviewer must be 1-255 characters with no control characters")
    return name


def describe_review(envelope: Envelope) -> str:
    """Who decided, and when, for a person arriving after the decision."""
    if envelope.review_decision:
        when = envelope.reviewed_at.isoformat() if envelope.reviewed_at else "an unknown time"
        return f"{envelope.review_decision.lower()} by {envelope.reviewer_id} at {when}"
    return f"closed with outcome {envelope.outcome or 'none'}"


@transaction.atomic
def review_envelope(
    organization,
    envelope_id,
    decision,
    reviewer_person_or_name,
    notes: str = "",
    reviewer_kind: str = "user",
) -> Envelope:
    """Approve or reject an envelope awaiting review; return it, closed and reviewed.

    Raises APIError: 400 for an unrecognised decision or invalid reviewer, 404 when the
    organization has no such envelope, 409 when it is not awaiting review (already
    decided, or never escalated).
    """
    decision = parse_decision(decision)
    reviewer_id = reviewer_name(reviewer_person_or_name)
    notes = str(notes or "").strip()
    envelope_id = parse_envelope_id(envelope_id)

    envelope = Envelope.objects.select_for_update().filter(organization=organization, pk=envelope_id).first()
    if envelope is None:
        raise APIError(404, "envelope not found")
    if envelope.state == EnvelopeState.CLOSED:
        raise APIError(409, f"envelope is already closed: {describe_review(envelope)}")
    if envelope.state != EnvelopeState.AWAITING_REVIEW:
        raise APIError(409, f"envelope is not awaiting review (state {envelope.state})")
    try:
        state = check_transition(envelope.state, EnvelopeState.CLOSED)
    except IllegalTransition as exc:
        raise APIError(409, str(exc)) from exc

    now = timezone.now()
    performer = {"performer_type": "user", "performer_id": reviewer_id, "occurred_at": now}
    events = append_events(
        envelope.chain_id,
        [
            EventDraft(
                "ESCALATION_REVIEWED",
                {"decision": decision.value, "reviewer_id": reviewer_id, "notes": notes},
                **performer,
            ),
            EventDraft("ENVELOPE_CLOSED", {"state": state}, **performer),
        ],
    )

    envelope.state = state
    envelope.review_decision = decision
    envelope.reviewer_id = reviewer_id
    envelope.reviewer_kind = reviewer_kind
    envelope.review_notes = notes
    envelope.reviewed_at = now
    envelope.closed_at = now
    envelope.updated_at = now
    envelope.audit_event_ids = [*envelope.audit_event_ids, *(str(event.pk) for event in events)]
    envelope.final_event_hash = events[-1].hash
    envelope.save(
        update_fields=[
            "state",
            "review_decision",
            "reviewer_id",
            "reviewer_kind",
            "review_notes",
            "reviewed_at",
            "closed_at",
            "updated_at",
            "audit_event_ids",
            "final_event_hash",
        ]
    )
    return envelope
