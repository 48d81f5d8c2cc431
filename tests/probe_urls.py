"""Routes that exist only in tests, to exercise the API machinery (errors, limits, auth)
without depending on any one product endpoint."""

from django.urls import include, path
from rest_framework import serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from governance.api.authentication import (
    BearerTokenAuthentication,
    OIDCAuthentication,
    WalletSessionAuthentication,
    oidc_identity_of,
)
from governance.api.permissions import HasRole, IsAuthenticatedPrincipal
from governance.choices import Role


class EchoSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=10)
    count = serializers.IntegerField(min_value=0)


class EchoView(APIView):
    permission_classes = [HasRole]
    required_roles = {"GET": (Role.PLATFORM_VIEWER,), "POST": (Role.PLATFORM_OPERATOR,)}

    def get(self, request):
        return Response({"principal": request.auth.subject_id, "kind": request.auth.kind})

    def post(self, request):
        serializer = EchoSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        return Response(serializer.validated_data)


class SmallBodyView(EchoView):
    max_body_bytes = 64


class OIDCEchoView(APIView):
    """A view that takes OIDC ID tokens beside Mandate's own tokens, as entitlement views will."""

    authentication_classes = [OIDCAuthentication, BearerTokenAuthentication]
    permission_classes = [IsAuthenticatedPrincipal]

    def get(self, request):
        identity = oidc_identity_of(request)
        return Response(
            {
                "principal": request.auth.subject_id,
                "kind": request.auth.kind,
                "issuer": identity.issuer if identity else None,
                "subject": identity.subject if identity else None,
            }
        )


class WalletEchoView(APIView):
    """A view that takes wallet sessions, as the installer's views will."""

    authentication_classes = [WalletSessionAuthentication]
    permission_classes = [IsAuthenticatedPrincipal]

    def get(self, request):
        return Response({"principal": request.auth.subject_id, "kind": request.auth.kind})


class CrashView(APIView):
    permission_classes = []
    authentication_classes = []

    def get(self, request):
        raise RuntimeError("boom")


urlpatterns = [
    path("v1/probe/echo", EchoView.as_view()),
    path("v1/probe/small", SmallBodyView.as_view()),
    path("v1/probe/crash", CrashView.as_view()),
    path("v1/probe/oidc", OIDCEchoView.as_view()),
    path("v1/probe/wallet", WalletEchoView.as_view()),
    path("", include("governance.urls")),
]
