from django.db import models

from governance.choices import Role


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
    # An agent's approval request waits for people straight away (or, log_only, is closed at once).
    EnvelopeState.RECEIVED: {EnvelopeState.EVALUATING, EnvelopeState.AWAITING_REVIEW, EnvelopeState.CLOSED},
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


# Who decides: escalated evaluations are reviewed by REVIEW_ROLES (MIDAS's reviews:write);
# agents' requests on the approval routes are decided by APPROVER_ROLES.
REVIEW_ROLES = (Role.PLATFORM_ADMIN, Role.GOVERNANCE_REVIEWER)
REVIEW_PERMISSION = "reviews:write"
APPROVER_ROLES = frozenset({Role.GOVERNANCE_APPROVER, Role.PLATFORM_ADMIN})


class ReviewDecision(models.TextChoices):
    APPROVED = "APPROVED"
    REJECTED = "REJECTED"


# Events that may end an envelope's chain, by final state (for integrity cross-checks).
TERMINAL_EVENTS = {
    EnvelopeState.CLOSED: {"ENVELOPE_CLOSED"},
    # While people work on it, a request's chain may end with their partial steps too; a held
    # action's with its claim while the gate runs the approved plan.
    EnvelopeState.AWAITING_REVIEW: {
        "ESCALATION_PENDING",
        "GATE_APPROVAL_CLAIMED",
        "APPROVAL_RECORDED",
        "REJECTION_RECORDED",
        "TWEAK_REQUESTED",
        "TWEAK_WITHDRAWN",
        "TWEAK_RESOLVED",
        "TIMEOUT_APPLIED",
    },
}


# --- agent approval requests (AIOS Govern) ----------------------------------------------


class RequestType(models.TextChoices):
    APPROVAL_REQUEST = "approval_request"
    INFORMATIONAL = "informational"
    PERMISSION_ELEVATION = "permission_elevation"
    ESCALATION = "escalation"
    REVIEW_REQUEST = "review_request"
    POLL_REQUEST = "poll_request"
    CHOICE = "choice"
    INPUT_REQUEST = "input_request"
    SPEND_APPROVAL = "spend_approval"


class RiskLevel(models.TextChoices):
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    CRITICAL = "critical"


class Route(models.TextChoices):
    LOG_ONLY = "log_only"
    APPROVAL = "approval"
    APPROVAL_SELF = "approval_self"
    APPROVE_MANAGER = "approve_manager"
    APPROVE_TEAM = "approve_team"
    APPROVE_ANY_ADMIN = "approve_any_admin"
    NOTIFY_MANAGER = "notify_manager"
    NOTIFY_TEAM_OWNER = "notify_team_owner"


# Routes whose cards need no decision: recorded, or shown to people as FYI.
# The ladder an ``escalate`` timeout climbs: the channel owner's manager, then any platform.admin.
MANAGER_LEVEL, ADMIN_LEVEL = 1, 2

NO_DECISION_ROUTES = frozenset({Route.LOG_ONLY, Route.NOTIFY_MANAGER, Route.NOTIFY_TEAM_OWNER})
TEAM_ROUTES = frozenset({Route.APPROVE_TEAM, Route.NOTIFY_TEAM_OWNER})


class OnTimeout(models.TextChoices):
    ESCALATE = "escalate"
    AUTO_APPROVE = "auto_approve"
    AUTO_REJECT = "auto_reject"
    EXPIRE = "expire"


class ReturnMode(models.TextChoices):
    WEBHOOK = "webhook"
    LONG_POLL = "long_poll"
    BOTH = "both"


class RequestStatus(models.TextChoices):
    PENDING = "pending"
    APPROVED = "approved"
    REJECTED = "rejected"
    ACKNOWLEDGED = "acknowledged"
    EXPIRED = "expired"


FINAL_REQUEST_STATUSES = frozenset(
    {RequestStatus.APPROVED, RequestStatus.REJECTED, RequestStatus.ACKNOWLEDGED, RequestStatus.EXPIRED}
)


class ChannelStatus(models.TextChoices):
    ACTIVE = "active"
    REVOKED = "revoked"


class TweakStatus(models.TextChoices):
    OPEN = "open"
    WITHDRAWN = "withdrawn"
    RESOLVED = "resolved"


class DeliveryStatus(models.TextChoices):
    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"
    DISABLED = "disabled"  # the receiver answered 410: the channel's webhook is off
