"""``POST /v1/reviews``: a person decides an envelope waiting for people (MIDAS-compatible).

One API decides anything waiting: an escalated evaluation is approved or rejected; on an
agent's request the review counts as that person's vote under the request's own rules
(route, separation of duties, approval rule), with the inbox's refusals as 403/409 and
their reason. Both go through the core's one decision path. ``status`` is ``resolved``
when the decision closed the envelope, ``recorded`` when it was a vote the rule still
needs more of.

With bearer or session authentication the authenticated person is the recorded reviewer;
the body's ``reviewer`` stays required and validated (MIDAS clients send it) but is only
recorded when no person stands behind the credential (open mode).
"""

from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from controlplane.services.lifecycle import Principal
from envelopes.choices import APPROVER_ROLES, ReviewDecision
from envelopes.evaluation.reviews import (
    DECISION_RULE,
    REVIEW_PERMISSION,
    REVIEW_ROLES,
    parse_decision,
    reviewer_name,
)
from envelopes.services.decide import Actor, Decision, decide
from envelopes.services.queries import parse_envelope_id
from governance.api.errors import APIError
from governance.api.fields import IdentityStringField, StringField, UUIDStringField
from governance.api.permissions import HasRole, credential_of
from governance.api.tenancy import request_organization
from governance.choices import expand_roles


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
    status = serializers.ChoiceField(
        ["resolved", "recorded"],
        help_text="resolved: the envelope is closed; recorded: a vote on an agent's request that needs more",
    )


class ReviewView(APIView):
    permission_classes = [HasRole]
    # Reviewers decide escalations; approvers vote on agents' requests (their rules decide).
    required_roles = (*REVIEW_ROLES, *sorted(APPROVER_ROLES - set(REVIEW_ROLES)))
    required_permission = REVIEW_PERMISSION

    @extend_schema(
        request=ReviewRequestSerializer,
        responses={
            200: ReviewResponseSerializer,
            400: OpenApiResponse(
                description="Missing envelope_id or decision; invalid reviewer; unrecognised decision"
            ),
            401: OpenApiResponse(description="Unauthenticated"),
            403: OpenApiResponse(
                description='Insufficient role: {"error": "forbidden", "required_permission": ...}; on an agent\'s '
                "request, the refusal's reason (separation of duties, not an approver, not your step)"
            ),
            404: OpenApiResponse(description="Envelope not found"),
            409: OpenApiResponse(description="Envelope not in awaiting_review state, or already decided"),
        },
        tags=["reviews"],
    )
    def post(self, request):
        serializer = ReviewRequestSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        body = serializer.validated_data
        credential = credential_of(request)
        if getattr(request.user, "is_authenticated", False):
            actor = Actor.of_person(request.user, expand_roles(credential.roles))
        else:
            reviewer = Principal.of(
                request.user, credential.roles, subject_id=credential.subject_id, claimed=body["reviewer"]
            )
            actor = Actor("user", reviewer_name(reviewer.name), roles=expand_roles(credential.roles))
        approve = parse_decision(body["decision"]) == ReviewDecision.APPROVED
        outcome = decide(
            request_organization(request).pk,
            parse_envelope_id(body["envelope_id"]),
            actor,
            Decision("approve" if approve else "reject", body.get("notes") or ""),
        )
        status = "resolved" if outcome.verdict.closes else "recorded"
        return Response({"envelope_id": str(outcome.envelope.pk), "status": status})
