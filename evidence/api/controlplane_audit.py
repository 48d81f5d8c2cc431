"""``GET /v1/controlplane/audit``: the resource-centric trail of control-plane changes
(bundle applies and lifecycle actions), newest first, scoped to the caller's organization."""

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from evidence.models import ControlPlaneAuditRecord
from evidence.services.audit_trails import controlplane_audit_entries
from governance.api.permissions import HasRole
from governance.api.query_params import MAX_LIMIT, parse_limit, timestamp_param
from governance.api.tenancy import request_organization
from governance.choices import Role

DEFAULT_LIMIT = 100


class ControlPlaneAuditEntrySerializer(serializers.ModelSerializer):
    class Meta:
        model = ControlPlaneAuditRecord
        fields = [
            "id",
            "occurred_at",
            "resource_kind",
            "resource_id",
            "resource_version",
            "action",
            "actor",
            "summary",
            "details",
        ]


class ControlPlaneAuditListSerializer(serializers.Serializer):
    entries = ControlPlaneAuditEntrySerializer(many=True)
    count = serializers.IntegerField()


def _query(name: str, description: str, type_=str) -> OpenApiParameter:
    return OpenApiParameter(name, type_, OpenApiParameter.QUERY, required=False, description=description)


class ControlPlaneAuditView(APIView):
    """Who changed which declared resource, when, and how."""

    permission_classes = [HasRole]
    required_roles = (Role.PLATFORM_VIEWER,)  # admin and operator imply viewer
    required_permission = "controlplane:read"

    @extend_schema(
        parameters=[
            _query("kind", "Resource kind, e.g. Surface, Profile, Grant (case-insensitive). Alias: resource_kind."),
            _query("id", "Resource id. Alias: resource_id."),
            _query("actor", "Who made the change."),
            _query("action", "e.g. approve, deprecate, suspend, revoke, reinstate."),
            _query("since", "RFC 3339; records at or after this instant.", OpenApiTypes.DATETIME),
            _query("until", "RFC 3339; records at or before this instant.", OpenApiTypes.DATETIME),
            _query("limit", f"1..{MAX_LIMIT}, default {DEFAULT_LIMIT}.", int),
        ],
        responses={
            200: ControlPlaneAuditListSerializer,
            400: OpenApiResponse(description="Invalid since, until or limit"),
            401: OpenApiResponse(description="Unauthenticated"),
            403: OpenApiResponse(description="Insufficient role (platform.viewer or above)"),
        },
        tags=["evidence"],
    )
    def get(self, request):
        params = request.query_params
        since = params.get("since")
        until = params.get("until")
        entries = controlplane_audit_entries(
            request_organization(request).pk,
            kind=params.get("kind") or params.get("resource_kind", ""),
            resource_id=params.get("id") or params.get("resource_id", ""),
            actor=params.get("actor", ""),
            action=params.get("action", ""),
            since=timestamp_param("since", since) if since else None,
            until=timestamp_param("until", until) if until else None,
            limit=parse_limit(params.get("limit"), DEFAULT_LIMIT),
        )
        return Response({"entries": ControlPlaneAuditEntrySerializer(entries, many=True).data, "count": len(entries)})
