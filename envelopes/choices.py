from django.db import models


class EnvelopeKind(models.TextChoices):
    EVALUATION = "evaluation"  # MIDAS POST /v1/evaluate
    APPROVAL_REQUEST = "approval_request"  # AIOS Govern channel request
    ACTION = "action"  # LatchGate held action


class EnvelopeState(models.TextChoices):
    RECEIVED = "received"
    EVALUATING = "evaluating"
    OUTCOME_RECORDED = "outcome_recorded"
    ESCALATED = "escalated"
    AWAITING_REVIEW = "awaiting_review"
    CLOSED = "closed"


# The envelope state machine, in one place. closed is terminal (and immutable).
STATE_TRANSITIONS = {
    EnvelopeState.RECEIVED: {EnvelopeState.EVALUATING},
    EnvelopeState.EVALUATING: {EnvelopeState.OUTCOME_RECORDED, EnvelopeState.ESCALATED},
    EnvelopeState.OUTCOME_RECORDED: {EnvelopeState.CLOSED},
    EnvelopeState.ESCALATED: {EnvelopeState.AWAITING_REVIEW},
    EnvelopeState.AWAITING_REVIEW: {EnvelopeState.CLOSED},
    EnvelopeState.CLOSED: set(),
}


class Outcome(models.TextChoices):
    ACCEPT = "accept"
    ESCALATE = "escalate"
    REJECT = "reject"
    REQUEST_CLARIFICATION = "request_clarification"


class ReasonCode(models.TextChoices):
    WITHIN_AUTHORITY = "WITHIN_AUTHORITY"
    CONFIDENCE_BELOW_THRESHOLD = "CONFIDENCE_BELOW_THRESHOLD"
    CONSEQUENCE_EXCEEDS_LIMIT = "CONSEQUENCE_EXCEEDS_LIMIT"
    POLICY_DENY = "POLICY_DENY"
    POLICY_ERROR = "POLICY_ERROR"
    AGENT_NOT_FOUND = "AGENT_NOT_FOUND"
    AGENT_OPERATIONAL_STATE_BLOCKED = "AGENT_OPERATIONAL_STATE_BLOCKED"
    SURFACE_NOT_FOUND = "SURFACE_NOT_FOUND"
    SURFACE_INACTIVE = "SURFACE_INACTIVE"
    NO_ACTIVE_GRANT = "NO_ACTIVE_GRANT"
    PROFILE_NOT_FOUND = "PROFILE_NOT_FOUND"
    GRANT_PROFILE_SURFACE_MISMATCH = "GRANT_PROFILE_SURFACE_MISMATCH"
    INSUFFICIENT_CONTEXT = "INSUFFICIENT_CONTEXT"


class ReviewDecision(models.TextChoices):
    APPROVED = "APPROVED"
    REJECTED = "REJECTED"


# Events that may end an envelope's chain, by final state (for integrity cross-checks).
TERMINAL_EVENTS = {
    EnvelopeState.CLOSED: {"ENVELOPE_CLOSED"},
    EnvelopeState.AWAITING_REVIEW: {"ESCALATION_PENDING"},
}
