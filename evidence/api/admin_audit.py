"""``GET /v1/platform/admin-audit``: the platform administrative audit trail (MIDAS-compatible)."""

import re
from datetime import UTC

from django.conf import settings
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from evidence.models import AdminAuditRecord
from evidence.services.audit_trails import admin_audit_entries
from governance.api.permissions import HasRole, credential_of
from governance.api.tenancy import request_organization
from governance.choices import Role

DEFAULT_LIMIT = 50
MAX_LIMIT = 500
FILTER_FIELDS = ("action", "outcome", "actor_id", "target_type", "target_id")


def sees_platform_records(request, organization) -> bool:
    """Platform-level records belong to whoever runs the platform: superusers, and the admins
    of the default organization (the one open mode and organization-less superusers act in)."""
    return (
        getattr(request.user, "is_superuser", False)
        or credential_of(request).kind == "open"
        or organization.slug == settings.MANDATE_DEFAULT_ORGANIZATION
    )


class RFC3339MillisField(serializers.DateTimeField):
    def to_representation(self, value):
        value = value.astimezone(UTC)
        return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"


class AdminAuditEntrySerializer(serializers.ModelSerializer):
    occurred_at = RFC3339MillisField()

    class Meta:
        model = AdminAuditRecord
        fields = [
            "id",
            "occurred_at",
            "action",
            "outcome",
            "actor_type",
            "actor_id",
            "target_type",
            "target_id",
            "request_id",
            "client_ip",
            "required_permission",
            "details",
        ]


class AdminAuditQuerySerializer(serializers.Serializer):
    action = serializers.CharField(required=False, allow_blank=True)
    outcome = serializers.CharField(required=False, allow_blank=True)
    actor_id = serializers.CharField(required=False, allow_blank=True)
    target_type = serializers.CharField(required=False, allow_blank=True)
    target_id = serializers.CharField(required=False, allow_blank=True)
    limit = serializers.CharField(required=False, trim_whitespace=False)

    def validate_limit(self, value):
        # Strict: "10" only — not "10.0", "+10", " 10" or other scripts' digits.
        if not re.fullmatch(r"[0-9]{1,6}", value) or not 1 <= int(value) <= MAX_LIMIT:
            raise serializers.ValidationError(f"must be a positive integer up to {MAX_LIMIT}")
        return int(value)


class AdminAuditView(APIView):
    permission_classes = [HasRole]
    required_roles = (Role.PLATFORM_ADMIN,)
    required_permission = "platform:admin-audit"

    @extend_schema(
        parameters=[
            OpenApiParameter("action", OpenApiTypes.STR, description="apply.invoked, password.changed, ..."),
            OpenApiParameter("outcome", OpenApiTypes.STR, description="success or failure"),
            OpenApiParameter("actor_id", OpenApiTypes.STR),
            OpenApiParameter("target_type", OpenApiTypes.STR, description="bundle, user, platform"),
            OpenApiParameter("target_id", OpenApiTypes.STR),
            OpenApiParameter("limit", OpenApiTypes.INT, description=f"1..{MAX_LIMIT}, default {DEFAULT_LIMIT}"),
        ],
        responses={
            200: inline_serializer("AdminAuditEntries", {"entries": AdminAuditEntrySerializer(many=True)}),
            400: OpenApiResponse(description="limit is not a positive integer, or exceeds 500"),
        },
        tags=["evidence"],
        summary="Platform administrative audit trail (platform.admin)",
    )
    def get(self, request):
        query = AdminAuditQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        params = query.validated_data
        organization = request_organization(request)
        entries = admin_audit_entries(
            organization,
            include_platform_records=sees_platform_records(request, organization),
            filters={name: params.get(name) for name in FILTER_FIELDS},
            limit=params.get("limit", DEFAULT_LIMIT),
        )
        return Response({"entries": AdminAuditEntrySerializer(entries, many=True).data})
