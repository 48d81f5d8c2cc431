"""``POST /v1/controlplane/plan`` and ``/apply``: YAML bundles in, JSON plans and results out."""

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiExample, extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.parsers import BaseParser
from rest_framework.response import Response

from controlplane.api.base import APPLY_ROLES, ControlPlaneView
from controlplane.services.bundles import apply_bundle, plan_bundle
from controlplane.services.documents import BundleSyntaxError
from evidence.services.audit_trails import record_admin_action
from governance.api.errors import APIError
from governance.api.request_meta import client_ip_of, request_id_of

MAX_BUNDLE_BYTES = 10 * 1024 * 1024


class BundleParser(BaseParser):
    """Accepts the YAML media types MIDAS accepts and hands the raw bytes to the service."""

    media_type = "application/yaml"
    media_types = ("application/yaml", "application/x-yaml", "text/yaml")

    def parse(self, stream, media_type=None, parser_context=None):
        return stream.read() if stream is not None else b""


class XYamlParser(BundleParser):
    media_type = "application/x-yaml"


class TextYamlParser(BundleParser):
    media_type = "text/yaml"


_validation_error = inline_serializer(
    "BundleValidationError",
    {
        "kind": serializers.CharField(),
        "id": serializers.CharField(),
        "field": serializers.CharField(),
        "message": serializers.CharField(),
    },
)
_apply_response = inline_serializer(
    "ApplyResponse",
    {
        "results": inline_serializer(
            "ApplyResult",
            {
                "kind": serializers.CharField(),
                "id": serializers.CharField(),
                "status": serializers.ChoiceField(["created", "conflict", "error", "unchanged"]),
                "version": serializers.IntegerField(required=False),
            },
            many=True,
        ),
        "validation_errors": _validation_error.__class__(many=True),
    },
)
_plan_response = inline_serializer(
    "PlanResponse",
    {
        "entries": inline_serializer(
            "PlanEntry",
            {
                "kind": serializers.CharField(),
                "id": serializers.CharField(),
                "action": serializers.ChoiceField(["create", "conflict", "invalid", "unchanged"]),
                "document_index": serializers.IntegerField(),
                "decision_source": serializers.ChoiceField(["persisted_state", "bundle_dependency", "validation"]),
                "message": serializers.CharField(required=False),
                "create_kind": serializers.ChoiceField(["new", "new_version"], required=False),
                "version": serializers.IntegerField(required=False),
                "diff": serializers.DictField(required=False),
                "warnings": serializers.ListField(child=serializers.DictField(), required=False),
            },
            many=True,
        ),
        "would_apply": serializers.BooleanField(),
        "invalid_count": serializers.IntegerField(),
        "conflict_count": serializers.IntegerField(),
        "create_count": serializers.IntegerField(),
        "validation_errors": _validation_error.__class__(many=True),
    },
)
_bundle_example = OpenApiExample(
    "bundle",
    value=(
        "apiVersion: midas.accept.io/v1\nkind: Agent\nmetadata:\n  id: agent-payments-prod\nspec:\n  type: automation\n"
    ),
    request_only=True,
)


class BundleView(ControlPlaneView):
    parser_classes = [BundleParser, XYamlParser, TextYamlParser]
    required_roles = APPLY_ROLES
    required_permission = "controlplane:apply"
    max_body_bytes = MAX_BUNDLE_BYTES
    body_too_large_status = 400

    def bundle_body(self, request) -> bytes:
        body = request.data
        if not isinstance(body, bytes | str):  # no body at all
            raise APIError(400, "request body must be a YAML bundle")
        return body


class PlanView(BundleView):
    @extend_schema(
        request={"application/yaml": OpenApiTypes.STR},
        responses=_plan_response,
        examples=[_bundle_example],
        tags=["controlplane"],
    )
    def post(self, request):
        try:
            plan = plan_bundle(self.organization, self.bundle_body(request))
        except BundleSyntaxError as exc:
            raise APIError(400, str(exc)) from exc
        return Response(plan.as_dict())


class ApplyView(BundleView):
    @extend_schema(
        request={"application/yaml": OpenApiTypes.STR},
        responses=_apply_response,
        examples=[_bundle_example],
        tags=["controlplane"],
    )
    def post(self, request):
        body = self.bundle_body(request)
        actor = request.user.get_username() if request.user.is_authenticated else request.auth.subject_id
        audit = {
            "action": "apply.invoked",
            "actor_type": "user",
            "actor_id": actor,
            "organization_id": self.organization.pk,
            "target_type": "bundle",
            "request_id": request_id_of(request),
            "client_ip": client_ip_of(request),
            "required_permission": self.required_permission,
        }
        try:
            result = apply_bundle(self.organization, body, actor=actor)
        except BundleSyntaxError as exc:
            record_admin_action(**audit, outcome="failure", details={"bundle_bytes": len(body), "error": str(exc)})
            raise APIError(400, str(exc)) from exc
        record_admin_action(
            **audit,
            outcome="success" if result.written else "failure",
            details={"bundle_bytes": len(body), **result.counts()},
        )
        return Response(result.as_dict())
