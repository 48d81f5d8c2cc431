"""The one wire representation of an envelope (MIDAS's five sections).

Every endpoint that returns an envelope — the envelope reads, the escalation queue, the
decision-by-request lookup, the evidence packet — renders it with
:func:`envelope_representation`. :class:`EnvelopeSerializer` renders through the same
function and exists so drf-spectacular can describe the shape.

Timestamps are RFC 3339 in UTC with microseconds (``2026-04-18T09:12:04.113000Z``),
``null`` when unset. ``submitted.raw`` is the request JSON as received, parsed with
``json.loads`` so its key order is preserved; a body that is not JSON stays a string.
"""

import json
from datetime import UTC, datetime

from rest_framework import serializers

from envelopes.choices import EnvelopeState, Outcome, ReviewDecision


def rfc3339(moment: datetime | None) -> str | None:
    """An RFC 3339 UTC timestamp with microseconds, or ``None``."""
    if moment is None:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def submitted_raw(text: str):
    """The submitted body as JSON (key order kept), or the text itself when it is not JSON."""
    try:
        return json.loads(text)
    except (TypeError, ValueError):
        return text


def envelope_representation(envelope) -> dict:
    """The MIDAS envelope JSON for one :class:`envelopes.models.Envelope`."""
    structure = envelope.structure or {}
    body = {
        "identity": {
            "id": str(envelope.id),
            "request_source": envelope.request_source,
            "request_id": envelope.request_id,
            "schema_version": envelope.schema_version,
        },
        "submitted": {
            "raw": submitted_raw(envelope.submitted_raw),
            "received_at": rfc3339(envelope.received_at),
        },
        "resolved": {
            "authority": {
                "surface_id": envelope.surface_id,
                "surface_version": envelope.surface_version,
                "profile_id": envelope.profile_id,
                "profile_version": envelope.profile_version,
                "agent_id": envelope.agent_id,
                "grant_id": envelope.grant_id,
            },
            "structure": {
                "process": structure.get("process"),
                "business_service": structure.get("business_service"),
                "capabilities": structure.get("capabilities") or [],
            },
        },
        "evaluation": {
            "outcome": envelope.outcome,
            "reason_code": envelope.reason_code,
            "evaluated_at": rfc3339(envelope.evaluated_at),
            "explanation": envelope.explanation or {},
        },
        "integrity": {
            "audit_event_ids": list(envelope.audit_event_ids or []),
            "first_event_hash": envelope.first_event_hash,
            "final_event_hash": envelope.final_event_hash,
            "submitted_hash": envelope.submitted_hash,
        },
        "state": envelope.state,
        "created_at": rfc3339(envelope.created_at),
        "updated_at": rfc3339(envelope.updated_at),
        "closed_at": rfc3339(envelope.closed_at),
    }
    if envelope.review_decision:
        body["review"] = {
            "decision": envelope.review_decision,
            "reviewer_id": envelope.reviewer_id,
            "reviewer_kind": envelope.reviewer_kind,
            "notes": envelope.review_notes,
            "reviewed_at": rfc3339(envelope.reviewed_at),
        }
    return body


# --- schema description (rendering always goes through envelope_representation) -----------


def one_of(choices) -> serializers.CharField:
    """A string documented by listing its values rather than as a named enum, so that other
    endpoints' ``state``/``decision`` fields with different value sets never collide."""
    return serializers.CharField(read_only=True, help_text="One of: " + ", ".join(choices.values))


class _Output(serializers.Serializer):
    """Output-only shapes: every field read-only (DRF's Serializer never creates or updates)."""


class EnvelopeIdentitySerializer(_Output):
    id = serializers.UUIDField(read_only=True)
    request_source = serializers.CharField(read_only=True)
    request_id = serializers.CharField(read_only=True)
    schema_version = serializers.CharField(read_only=True)


class EnvelopeSubmittedSerializer(_Output):
    raw = serializers.JSONField(
        read_only=True, help_text="The request JSON exactly as submitted (key order kept); a string if it was not JSON."
    )
    received_at = serializers.DateTimeField(read_only=True)


class EnvelopeAuthoritySerializer(_Output):
    surface_id = serializers.CharField(read_only=True)
    surface_version = serializers.IntegerField(read_only=True, allow_null=True)
    profile_id = serializers.CharField(read_only=True)
    profile_version = serializers.IntegerField(read_only=True, allow_null=True)
    agent_id = serializers.CharField(read_only=True)
    grant_id = serializers.CharField(read_only=True)


class StructureItemSerializer(_Output):
    id = serializers.CharField(read_only=True)
    name = serializers.CharField(read_only=True)
    status = serializers.CharField(read_only=True)


class EnvelopeStructureSerializer(_Output):
    process = StructureItemSerializer(read_only=True, allow_null=True)
    business_service = StructureItemSerializer(read_only=True, allow_null=True)
    capabilities = StructureItemSerializer(read_only=True, many=True)


class EnvelopeResolvedSerializer(_Output):
    authority = EnvelopeAuthoritySerializer(read_only=True)
    structure = EnvelopeStructureSerializer(read_only=True)


class EnvelopeExplanationSerializer(_Output):
    """The evaluation's detail. Keys depend on how far the evaluation got (a reject before
    the authority chain resolves has an empty explanation)."""

    confidence_provided = serializers.FloatField(read_only=True, required=False)
    confidence_threshold = serializers.FloatField(read_only=True, required=False)
    consequence_provided = serializers.JSONField(read_only=True, required=False, allow_null=True)
    consequence_threshold = serializers.JSONField(read_only=True, required=False, allow_null=True)
    policy_evaluated = serializers.BooleanField(read_only=True, required=False)
    policy_reference = serializers.CharField(read_only=True, required=False)
    missing_context_keys = serializers.ListField(child=serializers.CharField(), read_only=True, required=False)
    policy_error = serializers.CharField(read_only=True, required=False)


class EnvelopeEvaluationSerializer(_Output):
    outcome = serializers.ChoiceField(choices=Outcome.choices, read_only=True)
    reason_code = serializers.CharField(read_only=True)
    evaluated_at = serializers.DateTimeField(read_only=True, allow_null=True)
    explanation = EnvelopeExplanationSerializer(read_only=True)


class EnvelopeIntegritySerializer(_Output):
    audit_event_ids = serializers.ListField(child=serializers.UUIDField(), read_only=True)
    first_event_hash = serializers.CharField(read_only=True)
    final_event_hash = serializers.CharField(read_only=True)
    submitted_hash = serializers.CharField(read_only=True)


class EnvelopeReviewSerializer(_Output):
    decision = one_of(ReviewDecision)
    reviewer_id = serializers.CharField(read_only=True)
    reviewer_kind = serializers.CharField(read_only=True)
    notes = serializers.CharField(read_only=True)
    reviewed_at = serializers.DateTimeField(read_only=True, allow_null=True)


class EnvelopeSerializer(_Output):
    """The envelope object; ``review`` is present only once the envelope has been reviewed."""

    identity = EnvelopeIdentitySerializer(read_only=True)
    submitted = EnvelopeSubmittedSerializer(read_only=True)
    resolved = EnvelopeResolvedSerializer(read_only=True)
    evaluation = EnvelopeEvaluationSerializer(read_only=True)
    integrity = EnvelopeIntegritySerializer(read_only=True)
    state = one_of(EnvelopeState)
    created_at = serializers.DateTimeField(read_only=True)
    updated_at = serializers.DateTimeField(read_only=True)
    closed_at = serializers.DateTimeField(read_only=True, allow_null=True)
    review = EnvelopeReviewSerializer(read_only=True, required=False)

    def to_representation(self, instance):
        return envelope_representation(instance)


class EnvelopePageSerializer(_Output):
    """A page of envelopes, answered when ``limit`` or ``cursor`` is given."""

    items = EnvelopeSerializer(many=True, read_only=True)
    next_cursor = serializers.CharField(read_only=True, allow_null=True)
