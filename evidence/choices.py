from django.db import models


class KeyAlgorithm(models.TextChoices):
    ED25519 = "EdDSA", "Ed25519 (receipts, seals, packages)"
    ES256 = "ES256", "ES256 / P-256 (JWTs)"


class KeyStatus(models.TextChoices):
    ACTIVE = "active", "Active"
    RETIRED = "retired", "Retired"


class ChainErrorKind(models.TextChoices):
    MISSING_EVENTS = "missing_events"
    SEQUENCE_GAP = "sequence_gap"
    PREV_HASH_MISMATCH = "prev_hash_mismatch"
    EVENT_HASH_MISMATCH = "event_hash_mismatch"
    TERMINAL_STATE_MISMATCH = "terminal_state_mismatch"
    NON_CANONICAL_PAYLOAD = "non_canonical_payload"


# The action gate's receipts (LatchGate's wire values; docs/gate.md "Receipts").
class ResultKind(models.TextChoices):
    """``normalized_result.kind``; ``success`` carries ``summary``, ``provider_failure`` and
    ``internal_error`` carry ``reason``."""

    SUCCESS = "success"
    PROVIDER_FAILURE = "provider_failure"
    TIMEOUT = "timeout"
    CANCELLED = "cancelled"
    INTERNAL_ERROR = "internal_error"


class VerificationStatus(models.TextChoices):
    """``verification_outcome.status``; ``verified`` carries ``evidence``,
    ``verification_failed`` carries ``reason``."""

    VERIFIED = "verified"
    VERIFICATION_FAILED = "verification_failed"
    UNVERIFIABLE_DECLARED = "unverifiable_declared"
    PROVIDER_FAILED_BEFORE_VERIFICATION = "provider_failed_before_verification"
    SKIPPED = "skipped"


class FailureClass(models.TextChoices):
    PROVIDER_ERROR = "provider_error"
    TIMEOUT = "timeout"
    POLICY_VIOLATION = "policy_violation"
    VERIFICATION_FAILED = "verification_failed"
    CANCELLED = "cancelled"
    INTERNAL_ERROR = "internal_error"


class SignatureStatus(models.TextChoices):
    """What a receipt's signature says against the published receipt keys."""

    VERIFIED = "verified"
    UNSIGNED = "unsigned"
    UNKNOWN_KID = "unknown_kid"
    SIGNATURE_INVALID = "signature_invalid"


class GateDecision(models.TextChoices):
    """The decision a gate ledger event records (``GET /v1/audit/events?decision=``)."""

    ALLOW = "allow"
    ALLOW_UNVERIFIED = "allow_unverified"
    DENY = "deny"
    PENDING_APPROVAL = "pending_approval"
    ERROR = "error"
