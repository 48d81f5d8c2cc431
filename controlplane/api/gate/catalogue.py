"""``GET /v1/actions``, ``/v1/actions/{id}``, ``/v1/actions/{id}/schema/request``: discovery,
unauthenticated as in LatchGate (discovery has no side effect)."""

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework.response import Response

from controlplane.api.gate.base import PublicGateView
from controlplane.api.gate.serializers import ActionDetailSerializer, ActionListSerializer, ErrorSerializer
from controlplane.gate.manifests import wire_form
from controlplane.gate.registry import registry
from governance.errors import GateError

NOT_FOUND = OpenApiResponse(ErrorSerializer, description='{"error": "action_not_found"}')


def _manifest(action_id: str):
    manifest = registry().get(action_id)
    if manifest is None:
        raise GateError(404, "action_not_found")
    return manifest


class ActionListView(PublicGateView):
    @extend_schema(
        responses=ActionListSerializer,
        tags=["gate"],
        auth=[],
        summary="List the registered actions",
        operation_id="gate_actions_list",
    )
    def get(self, request):
        return Response({"actions": [manifest.summary() for manifest in registry().all()]})


class ActionDetailView(PublicGateView):
    @extend_schema(
        responses={200: ActionDetailSerializer, 404: NOT_FOUND},
        tags=["gate"],
        auth=[],
        summary="An action's manifest (secret names, never values)",
        operation_id="gate_action_show",
    )
    def get(self, request, action_id):
        return Response(wire_form(_manifest(action_id)))


class ActionRequestSchemaView(PublicGateView):
    @extend_schema(
        responses={
            200: OpenApiResponse(OpenApiTypes.OBJECT, description="The action's request JSON Schema"),
            404: OpenApiResponse(ErrorSerializer, description="action_not_found, or schema_not_found"),
        },
        tags=["gate"],
        auth=[],
        summary="An action's request JSON Schema",
        operation_id="gate_action_request_schema",
    )
    def get(self, request, action_id):
        schema = _manifest(action_id).io.request_schema
        if schema is None:
            raise GateError(404, "schema_not_found")
        return Response(schema)
