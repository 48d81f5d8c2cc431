"""``/auth/login``, ``/auth/logout``, ``/auth/change-password``: local users over JSON (MIDAS clients, scripts).

Login needs no CSRF token: it has no session to protect yet, and it only parses JSON, which
a cross-site form cannot send. Logout and change-password, called with the session, are
CSRF-protected by ``SessionAuthentication`` (send ``X-CSRFToken``). See docs/identity.md.
"""

from django.contrib.auth import login, logout, update_session_auth_hash
from drf_spectacular.utils import OpenApiResponse, extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import APIView

from governance.api.errors import APIError
from governance.api.permissions import credential_of
from governance.api.request_meta import client_ip_of, request_id_of
from governance.models import Person
from governance.services.passwords import (
    LoginThrottled,
    PasswordChangeRejected,
    authenticate_local_user,
    change_password,
)
from governance.services.people import person_roles


class LoginRequestSerializer(serializers.Serializer):
    username = serializers.CharField(max_length=150)
    password = serializers.CharField(max_length=4096, trim_whitespace=False)


class SignedInUserSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    username = serializers.CharField()
    roles = serializers.ListField(child=serializers.CharField(), help_text="Effective roles (implied ones included).")
    must_change_password = serializers.BooleanField()


class ChangePasswordRequestSerializer(serializers.Serializer):
    current_password = serializers.CharField(max_length=4096, trim_whitespace=False)
    new_password = serializers.CharField(max_length=4096, trim_whitespace=False)


def signed_in_user(person: Person) -> dict:
    return {
        "id": str(person.pk),
        "username": person.username,
        "roles": sorted(person_roles(person)),
        "must_change_password": person.must_change_password,
    }


class LoginView(APIView):
    authentication_classes = []
    permission_classes = [AllowAny]

    @extend_schema(
        request=LoginRequestSerializer,
        responses={
            200: inline_serializer("LoginResponse", {"user": SignedInUserSerializer()}),
            400: OpenApiResponse(description="username or password missing"),
            401: OpenApiResponse(description='{"error": "invalid credentials"}'),
            429: OpenApiResponse(description="too many failed sign-ins"),
        },
        tags=["auth"],
        summary="Sign in with a username and password; starts a session (cookie)",
    )
    def post(self, request):
        serializer = LoginRequestSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        try:
            person = authenticate_local_user(request._request, **serializer.validated_data)
        except LoginThrottled:
            raise APIError(429, "too many failed sign-ins; try again later") from None
        if person is None:
            raise APIError(401, "invalid credentials")
        login(request._request, person)  # new session key and CSRF token (csrftoken cookie)
        return Response({"user": signed_in_user(person)})


class LogoutView(APIView):
    allowed_before_password_change = True

    @extend_schema(request=None, responses={204: None}, tags=["auth"], summary="End the session")
    def post(self, request):
        logout(request._request)
        return Response(status=204)


class ChangePasswordView(APIView):
    allowed_before_password_change = True

    @extend_schema(
        request=ChangePasswordRequestSerializer,
        responses={
            200: inline_serializer("PasswordChanged", {"status": serializers.CharField()}),
            400: OpenApiResponse(description="missing fields, wrong current password, or rejected new password"),
        },
        tags=["auth"],
        summary="Change the signed-in person's password",
    )
    def post(self, request):
        person = request.user
        if not isinstance(person, Person):
            raise APIError(403, "forbidden: only a signed-in person has a password to change")
        serializer = ChangePasswordRequestSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        try:
            change_password(
                person,
                serializer.validated_data["current_password"],
                serializer.validated_data["new_password"],
                request_id=request_id_of(request),
                client_ip=client_ip_of(request),
            )
        except PasswordChangeRejected as exc:
            extra = {"problems": exc.problems} if exc.problems else {}
            raise APIError(400, exc.error, **extra) from None
        if credential_of(request).kind == "session":
            update_session_auth_hash(request._request, person)  # this session stays; others end
        return Response({"status": "password_changed"})
