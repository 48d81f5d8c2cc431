"""``POST /v1/evaluate``: may this agent do this? (MIDAS-compatible).

Under an ASGI server on Postgres, plain requests are answered on the hot path in front of
this view, with its answers (``envelopes/evaluation/fastroute.py``)."""

from drf_spectacular.utils import OpenApiExample, extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from envelopes.evaluation.engine import evaluate
from envelopes.evaluation.parse import parse_evaluation
from envelopes.services.queries import FORBIDDEN_IN_REQUEST_ID
from governance.api.errors import APIError
from governance.api.permissions import HasRole
from governance.api.tenancy import request_organization
from governance.choices import Role


class StrictNumberField(serializers.FloatField):
    """A JSON number: strings and booleans are refused, as a strict JSON decoder would."""

    def to_internal_value(self, data):
        if isinstance(data, bool) or not isinstance(data, int | float):
            self.fail("invalid")
        return super().to_internal_value(data)


class StrictSerializer(serializers.Serializer):
    """Unknown fields are errors, not silently dropped."""

    def to_internal_value(self, data):
        if not isinstance(data, dict):
            raise serializers.ValidationError({"non_field_errors": ["expected a JSON object"]})
        unknown = sorted(set(data) - set(self.fields))
        if unknown:
            raise serializers.ValidationError({name: ["unknown field"] for name in unknown})
        return super().to_internal_value(data)


class ConsequenceSerializer(StrictSerializer):
    type = serializers.ChoiceField(["monetary", "risk_rating"])
    amount = StrictNumberField(required=False, min_value=0)
    currency = serializers.RegexField(r"^[A-Z]{3}$", required=False, allow_blank=True)
    risk_rating = serializers.ChoiceField(["low", "medium", "high", "critical"], required=False)

    def validate(self, attrs):
        if attrs["type"] == "monetary" and "amount" not in attrs:
            raise serializers.ValidationError({"amount": ["required for a monetary consequence"]})
        if attrs["type"] == "risk_rating" and "risk_rating" not in attrs:
            raise serializers.ValidationError({"risk_rating": ["required for a risk_rating consequence"]})
        return attrs


class EvaluateRequestSerializer(StrictSerializer):
    """The request as OpenAPI documents it. ``envelopes.evaluation.parse.parse_evaluation``
    validates it (for this view and the hot path alike), with this serializer's messages."""

    surface_id = serializers.CharField(max_length=255)
    agent_id = serializers.CharField(max_length=255)
    confidence = StrictNumberField(min_value=0.0, max_value=1.0)
    process_id = serializers.CharField(max_length=255, required=False, allow_blank=True)
    consequence = ConsequenceSerializer(required=False, allow_null=True)
    context = serializers.DictField(required=False)
    request_id = serializers.CharField(max_length=255, required=False, allow_blank=True)
    request_source = serializers.CharField(max_length=255, required=False, allow_blank=True)

    def validate_request_id(self, value):
        if FORBIDDEN_IN_REQUEST_ID.search(value):
            raise serializers.ValidationError("must not contain '/', '\\' or control characters")
        return value

    def validate_request_source(self, value):
        if FORBIDDEN_IN_REQUEST_ID.search(value):
            raise serializers.ValidationError("must not contain '/', '\\' or control characters")
        return value


EvaluateResponseSerializer = inline_serializer(
    "EvaluateResponse",
    {
        "outcome": serializers.ChoiceField(["accept", "escalate", "reject", "request_clarification"]),
        "reason": serializers.CharField(),
        "envelope_id": serializers.UUIDField(),
        "explanation": serializers.CharField(required=False),
        "policy_mode": serializers.CharField(),
        "policy_reference": serializers.CharField(),
        "policy_skipped": serializers.BooleanField(),
    },
)


def _payment(request_id: str, amount: int) -> dict:
    return {
        "surface_id": "surf-payment-release",
        "agent_id": "agent-payments-prod",
        "confidence": 0.95,
        "consequence": {"type": "monetary", "amount": amount, "currency": "GBP"},
        "context": {"account_id": "acc-1001", "destination_country": "GB"},
        "request_id": request_id,
        "request_source": "payments-service",
    }


# Real requests against the demo bundle (controlplane/demo/bundle.yaml) and what Mandate answers
# them (docs/evaluation.md shows the same pairs; tests/test_evaluate_examples.py keeps both true).
EVALUATE_EXAMPLES = [
    OpenApiExample(
        "Accept",
        summary="500 GBP at 95% confidence: within the profile's 10,000 GBP and 85%",
        value=_payment("pay-0001", 500),
        request_only=True,
    ),
    OpenApiExample(
        "Accept",
        summary="Within the agent's authority: it may go ahead",
        value={
            "outcome": "accept",
            "reason": "WITHIN_AUTHORITY",
            "envelope_id": "dcf3ed98-529e-4186-8aa4-442df8c78879",
            "explanation": "The request is within the agent's delegated authority.",
            "policy_mode": "rego",
            "policy_reference": "payments.release",
            "policy_skipped": False,
        },
        response_only=True,
    ),
    OpenApiExample(
        "Escalate",
        summary="25,000 GBP: over the profile's 10,000 GBP",
        value=_payment("pay-0002", 25000),
        request_only=True,
    ),
    OpenApiExample(
        "Escalate",
        summary="Over the limit: a person reviews it (GET /v1/escalations, POST /v1/reviews)",
        value={
            "outcome": "escalate",
            "reason": "CONSEQUENCE_EXCEEDS_LIMIT",
            "envelope_id": "45b41128-f02f-4183-beda-925261003276",
            "explanation": "The consequence exceeds the profile's limit.",
            "policy_mode": "none",
            "policy_reference": "payments.release",
            "policy_skipped": True,
        },
        response_only=True,
    ),
]


class EvaluateView(APIView):
    permission_classes = [HasRole]
    required_roles = (Role.PLATFORM_OPERATOR, Role.PLATFORM_ADMIN)
    required_permission = "evaluate"
    max_body_bytes = 1024 * 1024

    @extend_schema(
        request=EvaluateRequestSerializer,
        responses=EvaluateResponseSerializer,
        examples=EVALUATE_EXAMPLES,
        tags=["evaluation"],
    )
    def post(self, request):
        evaluation = parse_evaluation(request.data)
        try:
            raw = request.body.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise APIError(400, "request body must be UTF-8") from exc
        organization = request_organization(request)
        return Response(evaluate(organization, evaluation, raw, performer_id=request.auth.subject_id))
