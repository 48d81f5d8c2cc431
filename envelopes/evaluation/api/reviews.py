"""``POST /v1/reviews``: a person resolves an escalated envelope (MIDAS-compatible).

With bearer or session authentication the authenticated person is the recorded reviewer;
the body's ``reviewer`` stays required and validated (MIDAS clients send it) but is only
recorded when no person stands behind the credential (open mode).
"""

from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from controlplane.services.lifecycle import Principal
from envelopes.evaluation.reviews import (
    DECISION_RULE,
    REVIEW_PERMISSION,
    REVIEW_ROLES,
    parse_decision,
    review_envelope,
)
from governance.api.errors import APIError
from governance.api.fields import IdentityStringField, StringField, UUIDStringField
from governance.api.permissions import HasRole, credential_of
from governance.api.tenancy import request_organization


class ReviewRequestSerializer(serializers.Serializer):
    envelope_id = UUIDStringField(help_text="UUID of the envelope to resolve")
    decision = StringField(help_text="approve / accept, or reject / deny")
    reviewer = IdentityStringField(help_text="Reviewer identifier (1-255 characters, no control characters)")
    notes = StringField(required=False, allow_blank=True, allow_null=True, help_text="Free-text justification")

    def validate_decision(self, value):
        try:
            parse_decision(value)
        except APIError as exc:
            raise serializers.ValidationError(DECISION_RULE) from exc
        return value


class ReviewResponseSerializer(serializers.Serializer):
    envelope_id = serializers.UUIDField()
    status = serializers.ChoiceField(["resolved"])


class ReviewView(APIView):
    permission_classes = [HasRole]
    required_roles = REVIEW_ROLES
    required_permission = REVIEW_PERMISSION

    @extend_schema(
        request=ReviewRequestSerializer,
        responses={
            200: ReviewResponseSerializer,
            400: OpenApiResponse(
                description="Missing envelope_id or decision; invalid reviewer; unrecognised decision"
            ),
            401: OpenApiResponse(description="Unauthenticated"),
            403: OpenApiResponse(description='Insufficient role: {"error": "forbidden", "required_permission": ...}'),
            404: OpenApiResponse(description="Envelope not found"),
            409: OpenApiResponse(description="Envelope not in awaiting_review state, or already closed"),
        },
        tags=["reviews"],
    )
    def post(self, request):
        serializer = ReviewRequestSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        body = serializer.validated_data
        credential = credential_of(request)
        reviewer = Principal.of(
            request.user, credential.roles, subject_id=credential.subject_id, claimed=body["reviewer"]
        )
        envelope = review_envelope(
            request_organization(request),
            body["envelope_id"],
            body["decision"],
            reviewer.name,
            notes=body.get("notes") or "",
        )
        return Response({"envelope_id": str(envelope.id), "status": "resolved"})
