"""drf-spectacular's description of the envelope document that
``envelopes.representation.envelope_representation`` renders (MIDAS's five sections)."""

from rest_framework import serializers

from envelopes.choices import EnvelopeState, Outcome, ReviewDecision
from envelopes.representation import envelope_representation

__all__ = ["envelope_representation"]


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
    schema_version = serializers.IntegerField(read_only=True)


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
    the authority chain resolves has an empty explanation; ``missing_context_keys`` and
    ``policy_error`` appear only when there are some), so none is required."""

    # Not read-only: drf-spectacular lists every read-only field of a response as required.

    confidence_provided = serializers.FloatField(required=False)
    confidence_threshold = serializers.FloatField(required=False)
    consequence_provided = serializers.JSONField(required=False, allow_null=True)
    consequence_threshold = serializers.JSONField(required=False, allow_null=True)
    policy_evaluated = serializers.BooleanField(required=False)
    policy_reference = serializers.CharField(required=False)
    missing_context_keys = serializers.ListField(child=serializers.CharField(), required=False)
    policy_error = serializers.CharField(required=False)


class EnvelopeEvaluationSerializer(_Output):
    outcome = serializers.ChoiceField(
        choices=Outcome.choices,
        allow_blank=True,
        read_only=True,
        help_text="Empty for an agent's approval request, which has no outcome.",
    )
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
    # Not read-only, so the schema does not list it as required (see EnvelopeExplanationSerializer).
    review = EnvelopeReviewSerializer(required=False)

    def to_representation(self, instance):
        return envelope_representation(instance)


class EnvelopePageSerializer(_Output):
    """A page of envelopes, answered when ``limit`` or ``cursor`` is given."""

    items = EnvelopeSerializer(many=True, read_only=True)
    next_cursor = serializers.CharField(read_only=True, allow_null=True)
