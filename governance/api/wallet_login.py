"""``/auth/wallet/login``, ``/auth/wallet/link``, ``/auth/wallet/unlink``: the console's
"Sign in with Ethereum" (the sign-in page's script and the wallets page's call them).

All three are CSRF-protected, signing in too (the sign-in page carries the token): a page
elsewhere must not sign a browser in to an account of its choosing. Errors are
``{"error": code, "message": text}``; docs/wallets.md lists the codes.
"""

import logging

from allauth.account.adapter import get_adapter
from allauth.core import ratelimit
from django.conf import settings
from django.contrib.auth.views import redirect_to_login
from django.shortcuts import resolve_url
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from drf_spectacular.utils import OpenApiResponse, extend_schema, inline_serializer
from rest_framework import exceptions, serializers
from rest_framework.authentication import CSRFCheck
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import APIView

from governance.api.authentication import SessionAuthentication
from governance.api.errors import APIError, flatten_validation
from governance.api.fields import StringField
from governance.api.permissions import IsAuthenticatedPrincipal
from governance.api.request_meta import client_ip_of, request_id_of
from governance.api.wallets import SIGN_IN_STATUS
from governance.errors import Invalid, NotFound
from governance.models import Person
from governance.services.wallet_login import link_wallet, sign_in_with_wallet, unlink_wallet
from governance.services.wallet_sessions import MAX_SIGNATURE_BYTES, SignInRefused
from governance.siwe import MAX_MESSAGE_CHARS

logger = logging.getLogger(__name__)

# How each refusal answers, beyond the verification's own (governance.api.wallets).
STATUS = {
    **SIGN_IN_STATUS,
    "csrf_failed": 403,
    "not_signed_in": 401,
    "wallet_not_linked": 401,
    "account_inactive": 403,
    "wallet_linked_to_another_account": 409,
    "too_many_attempts": 429,
}
MAX_NEXT_CHARS = 2048


def refusal(code: str, message: str, http_status: int | None = None) -> APIError:
    return APIError(http_status or STATUS.get(code, 400), code, message=message)


def audit_meta(request) -> dict:
    return {"request_id": request_id_of(request), "client_ip": client_ip_of(request)}


class ConsoleWalletView(APIView):
    """Checks the CSRF token before anything else, and answers DRF's own refusals with a code."""

    max_body_bytes = 2 * MAX_MESSAGE_CHARS + 2 * MAX_SIGNATURE_BYTES

    def initial(self, request, *args, **kwargs):
        check = CSRFCheck(lambda _: None)
        check.process_request(request._request)  # reads the CSRF cookie
        reason = check.process_view(request._request, None, (), {})
        if reason:
            raise refusal("csrf_failed", f"CSRF check failed: {reason.rstrip('.')}; reload the page and try again")
        super().initial(request, *args, **kwargs)

    def handle_exception(self, exc):
        if isinstance(exc, exceptions.NotAuthenticated | exceptions.AuthenticationFailed):
            exc = refusal("not_signed_in", "sign in to the console first", 401)
        elif isinstance(exc, exceptions.APIException) and not isinstance(exc, APIError):
            code = "invalid_request" if exc.status_code == 400 else str(exc.default_code)
            exc = refusal(code, str(exc.detail), exc.status_code)
        return super().handle_exception(exc)

    def validated(self, serializer_class, request) -> dict:
        serializer = serializer_class(data=request.data)
        if not serializer.is_valid():
            raise refusal("invalid_request", "; ".join(flatten_validation(serializer.errors)))
        return serializer.validated_data


class SignedMessageSerializer(serializers.Serializer):
    message = StringField(max_length=MAX_MESSAGE_CHARS, trim_whitespace=False)
    signature = StringField(max_length=2 + 2 * MAX_SIGNATURE_BYTES, trim_whitespace=False)


class WalletLoginRequestSerializer(SignedMessageSerializer):
    next = StringField(max_length=MAX_NEXT_CHARS, required=False, allow_blank=True)


class UnlinkRequestSerializer(serializers.Serializer):
    wallet = StringField(max_length=42)


ERROR_BODY = inline_serializer(
    "ConsoleWalletError", {"error": serializers.CharField(), "message": serializers.CharField()}
)


def error_responses(descriptions: dict[int, str]) -> dict:
    """The schema's error answers: each status with what it means, and 415 for a body not JSON."""
    return {
        http_status: OpenApiResponse(ERROR_BODY, description=description)
        for http_status, description in {**descriptions, 415: "unsupported_media_type"}.items()
    }


LINKED_WALLET = inline_serializer(
    "LinkedWallet", {"wallet": serializers.CharField(), "linked_at": serializers.DateTimeField()}
)


def page_after_sign_in(request, person: Person, asked_for: str) -> str:
    """Where the browser goes: the page asked for (on this site), else the console; through
    the password change first when the account must change its password."""
    target = asked_for or ""
    if not url_has_allowed_host_and_scheme(target, {request.get_host()}, require_https=request.is_secure()):
        target = resolve_url(settings.LOGIN_REDIRECT_URL)
    if person.must_change_password:
        return redirect_to_login(target, reverse("account_change_password"), "next").url
    return target


class WalletLoginView(ConsoleWalletView):
    authentication_classes = []
    permission_classes = [AllowAny]

    @extend_schema(
        request=WalletLoginRequestSerializer,
        responses={
            200: inline_serializer(
                "WalletLogin", {"redirect": serializers.CharField(), "username": serializers.CharField()}
            ),
            **error_responses(
                {
                    400: "malformed body, message or signature",
                    401: "the message or signature is refused; wallet_not_linked",
                    403: "csrf_failed, account_inactive",
                    409: "nonce_used",
                    429: "too_many_attempts",
                    503: "wallet_rpc_unavailable (EIP-1271)",
                }
            ),
        },
        tags=["auth"],
        summary="Sign in to the console with a linked wallet (EIP-4361); starts a session (cookie)",
    )
    def post(self, request):
        # One budget per client address, shared with the password sign-in (allauth's "login" rate).
        if not ratelimit.consume(request._request, action="login"):
            raise refusal("too_many_attempts", "too many sign-in attempts; try again in a minute")
        data = self.validated(WalletLoginRequestSerializer, request)
        try:
            person = sign_in_with_wallet(data["message"], data["signature"], **audit_meta(request))
        except SignInRefused as exc:
            logger.info("console wallet sign-in refused: %s", exc.code)
            raise refusal(exc.code, exc.message) from None
        get_adapter(request._request).login(request._request, person)  # new session key and CSRF token
        return Response(
            {"redirect": page_after_sign_in(request, person, data.get("next")), "username": person.username}
        )


class WalletLinkView(ConsoleWalletView):
    authentication_classes = [SessionAuthentication]
    permission_classes = [IsAuthenticatedPrincipal]

    @extend_schema(
        request=SignedMessageSerializer,
        responses={
            201: LINKED_WALLET,
            200: OpenApiResponse(LINKED_WALLET, description="already linked to this account"),
            **error_responses(
                {
                    400: "malformed body, message or signature",
                    401: "not_signed_in; the message or signature is refused",
                    403: "csrf_failed",
                    409: "nonce_used, wallet_linked_to_another_account",
                    503: "wallet_rpc_unavailable (EIP-1271)",
                }
            ),
        },
        tags=["auth"],
        summary="Link the wallet that signed the message to the signed-in person",
    )
    def post(self, request):
        data = self.validated(SignedMessageSerializer, request)
        try:
            linked = link_wallet(request.user, data["message"], data["signature"], **audit_meta(request))
        except SignInRefused as exc:
            raise refusal(exc.code, exc.message) from None
        body = {"wallet": linked.wallet.address, "linked_at": linked.wallet.linked_at}
        return Response(body, status=201 if linked.created else 200)


class WalletUnlinkView(ConsoleWalletView):
    authentication_classes = [SessionAuthentication]
    permission_classes = [IsAuthenticatedPrincipal]

    @extend_schema(
        request=UnlinkRequestSerializer,
        responses={
            200: inline_serializer("UnlinkedWallet", {"unlinked": serializers.CharField()}),
            **error_responses(
                {
                    400: "wallet is not an address",
                    401: "not_signed_in",
                    403: "csrf_failed",
                    404: "wallet_not_linked (to this account)",
                }
            ),
        },
        tags=["auth"],
        summary="Unlink one of the signed-in person's wallets",
    )
    def post(self, request):
        data = self.validated(UnlinkRequestSerializer, request)
        try:
            address = unlink_wallet(request.user, data["wallet"], **audit_meta(request))
        except Invalid as exc:
            raise refusal("invalid_request", exc.message) from None
        except NotFound as exc:
            raise refusal("wallet_not_linked", exc.message, 404) from None
        return Response({"unlinked": address})
