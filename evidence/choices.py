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
