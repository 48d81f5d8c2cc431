"""MIDAS lifecycle endpoints: approve and deprecate surfaces and profiles; suspend, revoke and
reinstate grants.

With bearer or session authentication the authenticated person is recorded as approver or
deprecator; the identities in the body stay accepted (MIDAS clients send them) but are
not trusted for the record. ``submitted_by`` still feeds the maker-checker rule.
"""

from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import serializers
from rest_framework.response import Response

from controlplane.api.base import LIFECYCLE_ROLES, ControlPlaneView
from controlplane.api.serializers import GrantSerializer
from controlplane.services import lifecycle
from controlplane.services.lifecycle import APPROVE_PERMISSION, LIFECYCLE_PERMISSION, Principal
from governance.api.errors import APIError
from governance.api.fields import IdentityField
from governance.api.permissions import credential_of

# --- request bodies ---------------------------------------------------------------------


class SurfaceApprovalSerializer(serializers.Serializer):
    submitted_by = IdentityField()
    approver_id = IdentityField()
    approver_name = serializers.CharField(required=False, allow_blank=True, max_length=255)


class SurfaceDeprecationSerializer(serializers.Serializer):
    deprecated_by = IdentityField()
    reason = serializers.CharField(max_length=2000)
    successor_id = serializers.CharField(required=False, allow_blank=True, max_length=255)


MAX_VERSION = 2**31 - 1  # the database column's range


class ProfileApprovalSerializer(serializers.Serializer):
    version = serializers.IntegerField(min_value=1, max_value=MAX_VERSION)
    approved_by = IdentityField()


class ProfileDeprecationSerializer(serializers.Serializer):
    version = serializers.IntegerField(min_value=1, max_value=MAX_VERSION)
    deprecated_by = IdentityField()


class GrantTransitionSerializer(serializers.Serializer):
    by = IdentityField(required=False, allow_blank=True)
    reason = serializers.CharField(max_length=2000)


# --- responses --------------------------------------------------------------------------


class ApprovedSurfaceSerializer(serializers.Serializer):
    surface_id = serializers.CharField()
    status = serializers.CharField()
    approved_by = serializers.CharField()


class DeprecatedSurfaceSerializer(serializers.Serializer):
    surface_id = serializers.CharField()
    status = serializers.CharField()
    deprecation_reason = serializers.CharField()
    successor_surface_id = serializers.CharField()


class ApprovedProfileSerializer(serializers.Serializer):
    profile_id = serializers.CharField()
    version = serializers.IntegerField()
    status = serializers.CharField()
    approved_by = serializers.CharField()


class DeprecatedProfileSerializer(serializers.Serializer):
    profile_id = serializers.CharField()
    version = serializers.IntegerField()
    status = serializers.CharField()


def _errors(**descriptions) -> dict:
    return {int(code.lstrip("e")): OpenApiResponse(description=text) for code, text in descriptions.items()}


COMMON_ERRORS = {
    "e401": "Unauthenticated",
    "e403": 'Insufficient role: {"error": "forbidden", "required_permission": ...}',
}


# --- views ------------------------------------------------------------------------------


class LifecycleView(ControlPlaneView):
    required_roles = LIFECYCLE_ROLES
    required_permission = LIFECYCLE_PERMISSION
    body_serializer: type[serializers.Serializer]

    def body(self) -> dict:
        serializer = self.body_serializer(data=self.request.data)
        serializer.is_valid(raise_exception=True)
        return serializer.validated_data

    def principal(self, claimed: str = "") -> Principal:
        credential = credential_of(self.request)
        return Principal.of(self.request.user, credential.roles, subject_id=credential.subject_id, claimed=claimed)


class SurfaceApproveView(LifecycleView):
    """Promote a surface from review to active (maker-checker: the submitter cannot approve)."""

    required_permission = APPROVE_PERMISSION
    body_serializer = SurfaceApprovalSerializer

    @extend_schema(
        request=SurfaceApprovalSerializer,
        responses={
            200: ApprovedSurfaceSerializer,
            **_errors(
                e400="Missing approver_id or submitted_by",
                e404="Surface not found",
                e409="Surface not in review status, or the submitter is the approver (maker-checker)",
                **COMMON_ERRORS,
            ),
        },
        tags=["controlplane"],
    )
    def post(self, request, surface_id):
        body = self.body()
        surface = lifecycle.approve_surface(
            organization=self.organization,
            surface_id=surface_id,
            principal=self.principal(claimed=body["approver_id"]),
            submitted_by=body["submitted_by"],
        )
        return Response({"surface_id": surface.key, "status": surface.status, "approved_by": surface.approved_by})


class SurfaceDeprecateView(LifecycleView):
    """Move a surface from active to deprecated."""

    body_serializer = SurfaceDeprecationSerializer

    @extend_schema(
        request=SurfaceDeprecationSerializer,
        responses={
            200: DeprecatedSurfaceSerializer,
            **_errors(
                e400="Missing deprecated_by or reason; unknown successor_id",
                e404="Surface not found",
                e409="Surface not in active status",
                **COMMON_ERRORS,
            ),
        },
        tags=["controlplane"],
    )
    def post(self, request, surface_id):
        body = self.body()
        surface = lifecycle.deprecate_surface(
            organization=self.organization,
            surface_id=surface_id,
            principal=self.principal(claimed=body["deprecated_by"]),
            reason=body["reason"],
            successor_id=body.get("successor_id", ""),
        )
        return Response(
            {
                "surface_id": surface.key,
                "status": surface.status,
                "deprecation_reason": surface.deprecation_reason,
                "successor_surface_id": surface.successor_surface_id,
            }
        )


class ProfileLifecycleView(LifecycleView):
    def body(self) -> dict:
        if not lifecycle.valid_identifier(self.kwargs["profile_id"]):
            raise APIError(400, "invalid profile id")
        return super().body()


class ProfileApproveView(ProfileLifecycleView):
    """Promote a profile version from review to active."""

    required_permission = APPROVE_PERMISSION
    body_serializer = ProfileApprovalSerializer

    @extend_schema(
        request=ProfileApprovalSerializer,
        responses={
            200: ApprovedProfileSerializer,
            **_errors(
                e400="Missing approved_by, invalid identifier, or version < 1",
                e404="Profile (version) not found",
                e409="Profile not in review status",
                **COMMON_ERRORS,
            ),
        },
        tags=["controlplane"],
    )
    def post(self, request, profile_id):
        body = self.body()
        profile = lifecycle.approve_profile(
            organization=self.organization,
            profile_id=profile_id,
            version=body["version"],
            principal=self.principal(claimed=body["approved_by"]),
        )
        return Response(
            {
                "profile_id": profile.key,
                "version": profile.version,
                "status": profile.status,
                "approved_by": profile.approved_by,
            }
        )


class ProfileDeprecateView(ProfileLifecycleView):
    """Move a profile version from active to deprecated."""

    body_serializer = ProfileDeprecationSerializer

    @extend_schema(
        request=ProfileDeprecationSerializer,
        responses={
            200: DeprecatedProfileSerializer,
            **_errors(
                e400="Missing deprecated_by, invalid identifier, or version < 1",
                e404="Profile (version) not found",
                e409="Profile not in active status",
                **COMMON_ERRORS,
            ),
        },
        tags=["controlplane"],
    )
    def post(self, request, profile_id):
        body = self.body()
        profile = lifecycle.deprecate_profile(
            organization=self.organization,
            profile_id=profile_id,
            version=body["version"],
            principal=self.principal(claimed=body["deprecated_by"]),
        )
        return Response({"profile_id": profile.key, "version": profile.version, "status": profile.status})


class GrantTransitionView(LifecycleView):
    """Suspend, revoke or reinstate a grant; ``transition`` is set per route."""

    body_serializer = GrantTransitionSerializer
    transition: str = ""

    @extend_schema(
        request=GrantTransitionSerializer,
        responses={
            200: GrantSerializer,
            **_errors(
                e400="Missing reason",
                e404="Grant not found",
                e409="Transition not allowed from the grant's status (revoked is terminal)",
                **COMMON_ERRORS,
            ),
        },
        tags=["controlplane"],
    )
    def post(self, request, grant_id):
        body = self.body()
        grant = lifecycle.change_grant_status(
            organization=self.organization,
            grant_id=grant_id,
            action=self.transition,
            principal=self.principal(claimed=body.get("by", "")),
            reason=body["reason"],
        )
        return Response(GrantSerializer(grant).data)
