"""What every gate endpoint of the control plane shares: LatchGate's error bodies, the
operator role and the operators' rate limits, and who the acting operator is."""

from rest_framework import exceptions, permissions
from rest_framework.throttling import BaseThrottle
from rest_framework.views import APIView

from controlplane.api.base import APPLY_ROLES
from controlplane.gate.audit import Actor
from governance.api.errors import APIError, flatten_validation
from governance.api.permissions import HasRole, credential_of
from governance.errors import GateError
from governance.gate.rate_limit import SettingBucket


def gate_error(exc: GateError) -> APIError:
    """``{"error": code}``, plus ``deny_reason`` (policy) or ``detail`` (what was wrong with
    an operator's request); 5xx carry the code alone."""
    extra = {}
    if exc.status < 500:
        if exc.deny_reason:
            extra["deny_reason"] = exc.deny_reason
        if exc.reason:
            extra["detail"] = exc.reason
    return APIError(exc.status, exc.code, **extra)


class GateView(APIView):
    """Renders errors in the gate's words."""

    def handle_exception(self, exc):
        if isinstance(exc, GateError):
            exc = gate_error(exc)
        elif isinstance(exc, exceptions.Throttled):
            exc = APIError(429, "rate_limit_exceeded")
        elif isinstance(exc, exceptions.ValidationError):
            exc = APIError(400, "invalid_request", detail="; ".join(flatten_validation(exc.detail)))
        elif isinstance(exc, exceptions.ParseError | exceptions.UnsupportedMediaType):
            exc = APIError(exc.status_code, "invalid_request", detail=str(exc.detail))
        return super().handle_exception(exc)


class PublicGateView(GateView):
    """Discovery: no credential needed, and any presented (the SDKs send DPoP headers
    everywhere) is ignored rather than checked."""

    authentication_classes = []
    permission_classes = [permissions.AllowAny]


# One bucket each for every operator endpoint of the process (governance.gate.rate_limit).
WRITE_BUCKET = SettingBucket("MANDATE_GATE_OPERATOR_WRITE_RATE")
READ_BUCKET = SettingBucket("MANDATE_GATE_OPERATOR_READ_RATE")


class OperatorRateLimit(BaseThrottle):
    """The reference's operator limits: ``MANDATE_GATE_OPERATOR_WRITE_RATE`` (20/s) on
    changes, ``MANDATE_GATE_OPERATOR_READ_RATE`` (100/s) on reads, one bucket each shared by
    every operator endpoint of the process (429 ``rate_limit_exceeded``)."""

    def allow_request(self, request, view):
        return (READ_BUCKET if request.method in permissions.SAFE_METHODS else WRITE_BUCKET).take()


class OperatorView(GateView):
    """An operator endpoint: platform.operator or platform.admin, by any of the default
    credentials (a bearer token, a session, an operator key with its DPoP proof)."""

    permission_classes = [HasRole]
    required_roles = APPLY_ROLES
    required_permission = "gate:operate"
    throttle_classes = [OperatorRateLimit]

    @property
    def actor(self) -> Actor:
        request = self.request
        credential = credential_of(request)
        organization_id = credential.organization_id if credential else None
        user = request.user
        if getattr(user, "is_authenticated", False) and getattr(user, "username", ""):
            return Actor(user.username, "user", str(user.pk), organization_id)
        kind = credential.kind if credential else "anonymous"
        subject = (credential.subject_id if credential else "") or kind
        return Actor(subject, kind, subject, organization_id)

    def body(self, serializer_class) -> dict:
        """The JSON body through ``serializer_class``; unknown fields are refused."""
        data = self.request.data
        if isinstance(data, dict):
            unknown = sorted(set(data) - set(serializer_class().fields))
            if unknown:
                raise APIError(400, "invalid_request", detail=f"unknown field(s): {', '.join(map(str, unknown))}")
        serializer = serializer_class(data=data)
        serializer.is_valid(raise_exception=True)
        return serializer.validated_data
