"""``POST /v1/leases`` (LatchGate's lease endpoint): parse, name the caller, hand over to
``governance.gate.leases.issue_lease``. Errors are the gate's ``{"error": code}``."""

from drf_spectacular.utils import OpenApiExample, OpenApiResponse, extend_schema, inline_serializer
from rest_framework import exceptions, serializers
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import APIView

from governance.api.authentication import OPERATOR_KEY
from governance.api.permissions import credential_of
from governance.errors import GateError
from governance.gate.leases import LeaseIdentity, issue_lease

LEASE_FIELDS = frozenset({"scopes", "dpop_jwk", "budgets", "agent_id"})


class DpopJwkSerializer(serializers.Serializer):
    kty = serializers.ChoiceField(choices=["EC"])
    crv = serializers.ChoiceField(choices=["P-256"])
    x = serializers.CharField(help_text="base64url, 32 bytes")
    y = serializers.CharField(help_text="base64url, 32 bytes")


class LeaseBudgetsSerializer(serializers.Serializer):
    max_calls = serializers.IntegerField(required=False, min_value=0)
    max_cost_usd_cents = serializers.IntegerField(required=False, min_value=0)


class LeaseRequestSerializer(serializers.Serializer):
    """Documents the body; ``issue_lease`` validates it (unknown fields are 400 ``invalid_request``)."""

    scopes = serializers.ListField(
        child=serializers.CharField(), help_text="tools:call, audit:read, or namespace:name scopes"
    )
    dpop_jwk = DpopJwkSerializer(help_text="The agent's DPoP public key (EC P-256).")
    budgets = LeaseBudgetsSerializer(required=False)
    agent_id = serializers.CharField(
        required=False, help_text="The agent the lease is for (a channel key's agent is fixed)."
    )


class IssuedLeaseSerializer(serializers.Serializer):
    lease_jwt = serializers.CharField()
    session_id = serializers.CharField()
    lease_jti = serializers.CharField()
    expires_at = serializers.CharField(help_text="RFC 3339 in UTC, whole seconds (2025-01-01T00:05:00Z).")


GateErrorSerializer = inline_serializer(
    "GateError",
    {
        "error": serializers.CharField(),
        "deny_reason": serializers.CharField(required=False),
        "reason": serializers.CharField(required=False),
    },
)


def lease_identity(request) -> LeaseIdentity:
    """Who asks, from the credential the default authenticators found (none: ``open``)."""
    credential = credential_of(request)
    if credential is None or credential.kind == "open":
        return LeaseIdentity(kind="open")
    common = {"organization_id": credential.organization_id, "roles": credential.roles}
    if credential.kind == "channel":
        # The channel's agent (envelopes' Channel.agent, a control-plane Agent, by its key);
        # a channel linked to no agent leases under its own id, never a name it chose.
        channel = getattr(request._request, "mandate_channel", None)
        agent_key = getattr(getattr(channel, "agent", None), "key", None)
        return LeaseIdentity(
            kind="channel", id=credential.subject_id, agent_id=agent_key or f"channel:{credential.subject_id}", **common
        )
    name = getattr(request.user, "username", "") or credential.subject_id
    if credential.kind == "token":
        return LeaseIdentity(kind="token", id=credential.credential_id or "", name=name, **common)
    if credential.kind == "session":
        return LeaseIdentity(kind="person", id=credential.subject_id, name=name, **common)
    if credential.kind == OPERATOR_KEY:
        return LeaseIdentity(kind="operator", id=credential.subject_id, name=credential.subject_id, **common)
    return LeaseIdentity(kind=credential.kind, id=credential.subject_id, **common)


class LeaseView(APIView):
    permission_classes = [AllowAny]  # who may have a lease is issue_lease's rule
    max_body_bytes = 16 * 1024

    @extend_schema(
        request=LeaseRequestSerializer,
        responses={
            200: IssuedLeaseSerializer,
            400: OpenApiResponse(GateErrorSerializer, description="invalid_request (with reason)"),
            401: OpenApiResponse(GateErrorSerializer, description="identity_unauthenticated, or a bad credential"),
            403: OpenApiResponse(GateErrorSerializer, description="identity_forbidden, scope_not_permitted"),
            429: OpenApiResponse(GateErrorSerializer, description="rate_limit_exceeded"),
            503: OpenApiResponse(GateErrorSerializer, description="draining, replay_cache_unavailable"),
        },
        examples=[
            OpenApiExample(
                "SDK request",
                request_only=True,
                value={
                    "scopes": ["tools:call"],
                    "dpop_jwk": {
                        "kty": "EC",
                        "crv": "P-256",
                        "x": "P6sf_0y-bl4a252KJcbHaaqh2vIy62Nur_zhHV04wcU",
                        "y": "gTbg1wBx2q-h2ivKtB8yL3pCNbOWawXs7yOCFoCRxuk",
                    },
                    "budgets": {"max_calls": 100},
                },
            )
        ],
        tags=["gate"],
        summary="Issue a lease (ES256 JWT) bound to the agent's DPoP key",
    )
    def post(self, request):
        body = request.data
        if not isinstance(body, dict):
            raise GateError(400, "invalid_request", reason="the body must be a JSON object")
        unknown = sorted(set(body) - LEASE_FIELDS)
        if unknown:
            raise GateError(400, "invalid_request", reason=f"unknown field {unknown[0][:60]}")
        issued = issue_lease(
            scopes=body.get("scopes"),
            dpop_jwk=body.get("dpop_jwk"),
            budgets=body.get("budgets"),
            agent_id=body.get("agent_id"),
            identity=lease_identity(request),
        )
        return Response(
            {
                "lease_jwt": issued.lease_jwt,
                "session_id": issued.session_id,
                "lease_jti": issued.lease_jti,
                "expires_at": issued.expires_at,
            }
        )

    def handle_exception(self, exc):
        # The gate's codes for what DRF raises before the service runs.
        if isinstance(exc, exceptions.NotAuthenticated | exceptions.AuthenticationFailed):
            exc = GateError(401, "identity_unauthenticated")
        elif isinstance(exc, exceptions.ParseError | exceptions.UnsupportedMediaType):
            exc = GateError(400, "invalid_request", reason=str(exc.detail))
        return super().handle_exception(exc)
