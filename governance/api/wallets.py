"""``/governance/auth/nonce`` and ``/governance/auth/verify``: Sign-In with Ethereum for
launchers (edut's installer). Errors are edut's shape, ``{"error": code, "code": code,
"correlation_id": "req_..."}``, and every answer carries ``X-Correlation-ID``."""

import logging

from drf_spectacular.utils import OpenApiResponse, extend_schema, inline_serializer
from rest_framework import exceptions, serializers
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import APIView

from governance.api.errors import APIError, flatten_validation
from governance.api.fields import StringField
from governance.api.request_meta import correlation_id_of
from governance.services.wallet_sessions import MAX_SIGNATURE_BYTES, SignInRefused, issue_nonce, verify_sign_in
from governance.siwe import MAX_MESSAGE_CHARS
from governance.timestamps import rfc3339_isoformat

logger = logging.getLogger(__name__)

# How each refusal answers (docs/wallets.md).
SIGN_IN_STATUS = {
    "invalid_request": 400,
    "message_malformed": 400,
    "address_checksum_invalid": 400,
    "signature_malformed": 400,
    "domain_mismatch": 401,
    "uri_mismatch": 401,
    "chain_not_allowed": 401,
    "issued_in_future": 401,
    "message_expired": 401,
    "message_not_yet_valid": 401,
    "nonce_unknown": 401,
    "nonce_expired": 401,
    "signature_invalid": 401,
    "nonce_used": 409,
    "wallet_rpc_unavailable": 503,
}


def wallet_error(request, http_status: int, code: str, reason: str | None = None) -> APIError:
    extra = {"code": code, "correlation_id": correlation_id_of(request)}
    if reason:
        extra["reason"] = reason
    return APIError(http_status, code, **extra)


class CorrelatedView(APIView):
    """Answers carry ``X-Correlation-ID``; DRF's own refusals come out in the edut shape."""

    def handle_exception(self, exc):
        if isinstance(exc, exceptions.APIException) and not isinstance(exc, APIError):
            code = "invalid_request" if exc.status_code == 400 else str(exc.default_code)
            exc = wallet_error(self.request, exc.status_code, code, str(exc.detail))
        return super().handle_exception(exc)

    def finalize_response(self, request, response, *args, **kwargs):
        response = super().finalize_response(request, response, *args, **kwargs)
        response["X-Correlation-ID"] = correlation_id_of(request)
        return response


ERROR_BODY = inline_serializer(
    "WalletError",
    {
        "error": serializers.CharField(),
        "code": serializers.CharField(),
        "correlation_id": serializers.CharField(),
        "reason": serializers.CharField(required=False),
    },
)


class NonceView(CorrelatedView):
    authentication_classes = []
    permission_classes = [AllowAny]

    @extend_schema(
        request=None,
        responses={
            200: inline_serializer(
                "SiweNonce", {"nonce": serializers.CharField(), "expires_at": serializers.DateTimeField()}
            )
        },
        tags=["wallets"],
        summary="A single-use nonce for a Sign-In with Ethereum message",
    )
    def get(self, request):
        issued = issue_nonce()
        return Response({"nonce": issued.nonce, "expires_at": rfc3339_isoformat(issued.expires_at)})


class VerifyRequestSerializer(serializers.Serializer):
    message = StringField(max_length=MAX_MESSAGE_CHARS, trim_whitespace=False)
    signature = StringField(max_length=2 + 2 * MAX_SIGNATURE_BYTES, trim_whitespace=False)


class VerifyView(CorrelatedView):
    authentication_classes = []
    permission_classes = [AllowAny]

    @extend_schema(
        request=VerifyRequestSerializer,
        responses={
            200: inline_serializer(
                "WalletSignIn",
                {
                    "wallet_session": serializers.CharField(help_text="Bearer credential (mws_...), shown once."),
                    "wallet": serializers.CharField(help_text="EIP-55 checksummed address."),
                    "expires_at": serializers.DateTimeField(),
                },
            ),
            400: OpenApiResponse(ERROR_BODY, description="malformed body, message or signature"),
            401: OpenApiResponse(ERROR_BODY, description="the message or signature is refused"),
            409: OpenApiResponse(ERROR_BODY, description="nonce_used"),
            503: OpenApiResponse(ERROR_BODY, description="wallet_rpc_unavailable (EIP-1271)"),
        },
        tags=["wallets"],
        summary="Verify a signed EIP-4361 message; open a wallet session",
    )
    def post(self, request):
        serializer = VerifyRequestSerializer(data=request.data)
        if not serializer.is_valid():
            raise wallet_error(request, 400, "invalid_request", "; ".join(flatten_validation(serializer.errors)))
        try:
            signed_in = verify_sign_in(serializer.validated_data["message"], serializer.validated_data["signature"])
        except SignInRefused as exc:
            logger.info("wallet sign-in refused: %s (%s)", exc.code, correlation_id_of(request))
            raise wallet_error(request, SIGN_IN_STATUS.get(exc.code, 400), exc.code, exc.message) from None
        session = signed_in.session
        logger.info("wallet session opened for %s (%s)", session.wallet, correlation_id_of(request))
        return Response(
            {
                "wallet_session": signed_in.secret,
                "wallet": session.wallet,
                "expires_at": rfc3339_isoformat(session.expires_at),
            }
        )
