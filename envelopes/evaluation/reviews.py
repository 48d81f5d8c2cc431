"""Escalated evaluations, decided by people (MIDAS reviews).

The evaluation kind's rules for the core's one decision path (``envelopes.services.decide``):
an envelope awaiting review is approved or rejected once, by a holder of a review role;
the core locks the envelope, so two reviewers deciding at once cannot both succeed, moves
it awaiting_review → closed through the state machine, and appends ESCALATION_REVIEWED and
ENVELOPE_CLOSED to its chain in the same transaction. The evaluation outcome stays
``escalate``: the decision is the review's.
"""

from envelopes.choices import REVIEW_PERMISSION, REVIEW_ROLES, EnvelopeKind, EnvelopeState, ReviewDecision
from envelopes.models import Envelope
from envelopes.services.decide import Actor, Decision, Verdict, decide
from envelopes.services.queries import parse_envelope_id
from evidence.services.chain import EventDraft
from governance.control_characters import has_control_characters
from governance.errors import Conflict, DomainError, Invalid, Refused

__all__ = ["REVIEW_PERMISSION", "REVIEW_ROLES", "EvaluationRules", "parse_decision", "review_envelope"]

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
        raise Invalid(f"decision {DECISION_RULE}")
    return decision


def reviewer_name(reviewer) -> str:
    """The recorded reviewer id: a person's username, or the given name (1–255 characters,
    no control characters)."""
    name = getattr(reviewer, "username", reviewer)
    name = str(name or "").strip()
    if not name or len(name) > MAX_REVIEWER_LENGTH or has_control_characters(name):
        raise Invalid("reviewer must be 1-255 characters with no control characters")
    return name


def describe_review(envelope: Envelope) -> str:
    """Who decided, and when, for a person arriving after the decision."""
    if envelope.review_decision:
        when = envelope.reviewed_at.isoformat() if envelope.reviewed_at else "an unknown time"
        return f"{envelope.review_decision.lower()} by {envelope.reviewer_id} at {when}"
    return f"closed with outcome {envelope.outcome or 'none'}"


class EvaluationRules:
    """An escalated evaluation's rules: awaiting review, decided once by a reviewer.

    Separation of duties does not apply (an evaluation has no owner among the people);
    eligibility is holding a review role. An actor with no person behind it (open mode, or
    a service naming its reviewer) was authorized by its edge."""

    kind = EnvelopeKind.EVALUATION
    envelope_fields = ("review_decision", "reviewer_id", "reviewer_kind", "review_notes", "reviewed_at")

    def load(self, envelopes):
        return {envelope.pk: envelope for envelope in envelopes}

    def refusal(self, envelope: Envelope, actor: Actor, decision: Decision) -> DomainError | None:
        if envelope.state == EnvelopeState.CLOSED:
            return Conflict(f"envelope is already closed: {describe_review(envelope)}")
        if envelope.state != EnvelopeState.AWAITING_REVIEW:
            return Conflict(f"envelope is not awaiting review (state {envelope.state})")
        if decision.action not in ("approve", "reject"):
            return Invalid(f"decision {DECISION_RULE}")
        if actor.person is not None and not actor.roles & set(REVIEW_ROLES):
            return Refused(
                f"deciding escalations needs {' or '.join(REVIEW_ROLES)}",
                code="not_eligible",
                required_permission=REVIEW_PERMISSION,
            )
        return None

    def apply(self, envelope: Envelope, actor: Actor, decision: Decision, now) -> Verdict:
        verdict = ReviewDecision.APPROVED if decision.action == "approve" else ReviewDecision.REJECTED
        notes = str(decision.comment or "").strip()
        envelope.review_decision, envelope.reviewer_id, envelope.reviewer_kind = verdict, actor.id, actor.kind
        envelope.review_notes, envelope.reviewed_at = notes, now
        reviewed = {"decision": verdict.value, "reviewer_id": actor.id, "notes": notes}
        return Verdict("resolved", [EventDraft("ESCALATION_REVIEWED", reviewed, *actor.performer, now)], closes=True)

    def save(self, envelopes, now) -> None:
        """The review lives on the envelope row, which the core saves."""


def review_envelope(
    organization,
    envelope_id,
    decision,
    reviewer_person_or_name,
    notes: str = "",
) -> Envelope:
    """Approve or reject an envelope awaiting review through the one decision path; return
    it, closed and reviewed. A person decides with their roles; a name (open mode, or a
    caller that authorized the reviewer itself) is recorded as given.

    Raises Invalid for an unrecognised decision or reviewer, NotFound when the organization
    has no such envelope, Conflict when it is not awaiting review, Refused when the person
    holds no review role.
    """
    word = parse_decision(decision)
    if isinstance(reviewer_person_or_name, str):
        actor = Actor("user", reviewer_name(reviewer_person_or_name))
    else:
        actor = Actor.of_person(reviewer_person_or_name)
    organization_id = getattr(organization, "pk", organization)
    action = "approve" if word == ReviewDecision.APPROVED else "reject"
    decision = Decision(action, str(notes or ""))
    outcome = decide(organization_id, parse_envelope_id(envelope_id), actor, decision, kind=EnvelopeKind.EVALUATION)
    return outcome.envelope
