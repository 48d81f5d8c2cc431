"""MIDAS's envelope reads: ``GET /v1/envelopes``, ``/v1/envelopes/{id}``, ``/v1/escalations``
and ``/v1/decisions/request/{request_id}``.

Every view reads the caller's organization only and renders envelopes with
``envelopes.evaluation.api.serializers.envelope_representation``. Lists answer MIDAS's plain JSON
array (the newest ``PLAIN_LIST_CAP``) unless ``limit`` or ``cursor`` is given, in which case
they answer ``{"items": [...], "next_cursor": ...}``.
"""

from django_filters.rest_framework import DjangoFilterBackend
from drf_spectacular.openapi import AutoSchema
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, PolymorphicProxySerializer, extend_schema
from rest_framework import generics
from rest_framework.response import Response

from controlplane.api.base import VIEW_ROLES
from envelopes.choices import EnvelopeKind, EnvelopeState
from envelopes.evaluation.api.serializers import EnvelopePageSerializer, EnvelopeSerializer, envelope_representation
from envelopes.evaluation.filtersets import EnvelopeFilterSet, EnvelopeStateFilterSet
from envelopes.models import Envelope
from envelopes.services.queries import (
    DEFAULT_PAGE_SIZE,
    PLAIN_LIST_CAP,
    capped_list,
    envelope_by_id,
    envelope_by_request,
    envelope_page,
    organization_envelopes,
)
from governance.api.errors import APIError
from governance.api.lists import TRUNCATED_HEADER, list_response
from governance.api.permissions import HasRole
from governance.api.query_params import MAX_LIMIT
from governance.api.tenancy import request_organization
from governance.choices import Role

TAGS = ["envelopes"]

PAGE_PARAMETERS = [
    OpenApiParameter(
        "limit",
        OpenApiTypes.INT,
        description=f"Page size, 1..{MAX_LIMIT} (default {DEFAULT_PAGE_SIZE}). Giving `limit` or `cursor` "
        'switches the answer to a page `{"items": [...], "next_cursor": ...}`.',
    ),
    OpenApiParameter("cursor", OpenApiTypes.STR, description="The `next_cursor` of the previous page (opaque)."),
]

EnvelopeListResponse = PolymorphicProxySerializer(
    component_name="EnvelopeList",
    serializers=[EnvelopeSerializer(many=True), EnvelopePageSerializer],
    resource_type_field_name=None,
    many=False,
)

LIST_DESCRIPTION = (
    f"Newest first. Without `limit`/`cursor`: a plain JSON array of at most {PLAIN_LIST_CAP} envelopes "
    f"(the newest; the `{TRUNCATED_HEADER}: true` header says more exist). With them: one page."
)


class EnvelopeListSchema(AutoSchema):
    """Documents the filters although the response (array or page) is not a plain list."""

    def get_filter_backends(self):
        return getattr(self.view, "filter_backends", [])


class EnvelopeFilterBackend(DjangoFilterBackend):
    """django-filter, answering a bad filter value with one ``{"error": ...}`` line."""

    def filter_queryset(self, request, queryset, view):
        filterset = self.get_filterset(request, queryset, view)
        if filterset is None:
            return queryset
        if not filterset.is_valid():
            raise APIError(400, filterset.error_message)
        return filterset.qs


class EnvelopeReadView(generics.GenericAPIView):
    """Reads envelopes of the caller's organization (platform.viewer or above; reviewers too,
    who work the escalation queue)."""

    permission_classes = [HasRole]
    required_roles = (*VIEW_ROLES, Role.GOVERNANCE_REVIEWER)
    required_permission = "envelopes:read"
    queryset = Envelope.objects.all()
    serializer_class = EnvelopeSerializer
    pagination_class = None
    filter_backends = []

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):  # schema generation: no request
            return Envelope.objects.none()
        return organization_envelopes(request_organization(self.request))


class EnvelopeCollectionView(EnvelopeReadView):
    filter_backends = [EnvelopeFilterBackend]
    schema = EnvelopeListSchema()

    def get(self, request, *args, **kwargs):
        return list_response(
            request,
            self.filter_queryset(self.get_queryset()),
            capped=capped_list,
            page=envelope_page,
            render=lambda rows: [envelope_representation(e) for e in rows],
            default_page_size=DEFAULT_PAGE_SIZE,
        )


class EnvelopeListView(EnvelopeCollectionView):
    filterset_class = EnvelopeStateFilterSet

    @extend_schema(
        summary="List envelopes",
        operation_id="v1_envelopes_list",
        description=LIST_DESCRIPTION,
        parameters=PAGE_PARAMETERS,
        responses=EnvelopeListResponse,
        tags=TAGS,
    )
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)


class EscalationListView(EnvelopeCollectionView):
    """MIDAS's pending escalation queue: evaluations that escalated and await review. Agents'
    requests wait for people too, but they are not escalations (no outcome, no reason code):
    they are listed by ``GET /v1/envelopes?state=awaiting_review`` and the inbox."""

    filterset_class = EnvelopeFilterSet

    def get_queryset(self):
        return super().get_queryset().filter(state=EnvelopeState.AWAITING_REVIEW, kind=EnvelopeKind.EVALUATION)

    @extend_schema(
        summary="List envelopes awaiting review",
        operation_id="v1_escalations_list",
        description=LIST_DESCRIPTION,
        parameters=PAGE_PARAMETERS,
        responses=EnvelopeListResponse,
        tags=["escalations"],
    )
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)


class EnvelopeDetailView(EnvelopeReadView):
    @extend_schema(
        summary="One envelope",
        operation_id="v1_envelopes_retrieve",
        parameters=[OpenApiParameter("id", OpenApiTypes.UUID, OpenApiParameter.PATH)],
        responses=EnvelopeSerializer,
        tags=TAGS,
    )
    def get(self, request, id):  # noqa: A002 - the route's parameter name
        return Response(envelope_representation(envelope_by_id(request_organization(request), id)))


class DecisionByRequestView(EnvelopeReadView):
    @extend_schema(
        summary="The envelope of a request",
        operation_id="v1_decisions_request_retrieve",
        description="The envelope recorded for `(source, request_id)`; `source` defaults to `api`.",
        parameters=[
            OpenApiParameter("request_id", OpenApiTypes.STR, OpenApiParameter.PATH),
            OpenApiParameter("source", OpenApiTypes.STR, description="The request_source scope (default `api`)."),
        ],
        responses=EnvelopeSerializer,
        tags=["decisions"],
    )
    def get(self, request, request_id=""):
        source = request.query_params.get("source") or "api"
        envelope = envelope_by_request(request_organization(request), request_id, source)
        return Response(envelope_representation(envelope))
