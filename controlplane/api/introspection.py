"""MIDAS's read-only "Operator introspection" and "Structural entities" endpoints.

Every view reads the caller's organization only, answers ``{"error": "<noun> not found"}``
(404) for an unknown id and ``{"error": "invalid <noun> id"}`` (400) for a path id that is
not an identifier. Lists are plain JSON arrays, filtered by ``controlplane.filtersets``;
the whole-organization lists MIDAS lacks (agents, surfaces) also page on request
(``controlplane.services.listing``).
"""

from dataclasses import asdict

from drf_spectacular.openapi import AutoSchema
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiParameter,
    PolymorphicProxySerializer,
    extend_schema,
    extend_schema_view,
    inline_serializer,
)
from rest_framework import generics, mixins
from rest_framework import serializers as drf_serializers
from rest_framework.response import Response

from controlplane.api import serializers
from controlplane.api.base import ControlPlaneView
from controlplane.filtersets import (
    AgentFilterSet,
    BusinessServiceFilterSet,
    CapabilityFilterSet,
    GrantFilterSet,
    ProcessFilterSet,
    ProfileFilterSet,
    SurfaceFilterSet,
    is_identifier,
)
from controlplane.models import Agent, BusinessService, Capability, Grant, Process, Profile, Surface
from controlplane.services.listing import DEFAULT_PAGE_SIZE, PLAIN_LIST_CAP, capped_list, page_by_id
from controlplane.services.recovery import latest_versions, profile_recovery, surface_recovery
from governance.api.errors import APIError
from governance.api.lists import TRUNCATED_HEADER, list_response
from governance.api.query_params import MAX_LIMIT

INTROSPECTION_TAGS = ["introspection"]
STRUCTURE_TAGS = ["structure"]


class DeclaredView(ControlPlaneView, generics.GenericAPIView):
    """Reads one kind of declared resource, by its id (``key``), in the caller's organization."""

    noun = ""  # names the resource in error messages
    lookup_field = "key"
    lookup_url_kwarg = "id"
    pagination_class = None

    @property
    def versioned(self) -> bool:
        return issubclass(self.queryset.model, Surface | Profile)

    def get_queryset(self):
        return self.queryset.filter(organization=self.organization)

    def resource_id(self) -> str:
        key = self.kwargs[self.lookup_url_kwarg]
        if not is_identifier(key):
            raise APIError(400, f"invalid {self.noun} id")
        return key

    def not_found(self) -> APIError:
        return APIError(404, f"{self.noun} not found")

    def versions(self):
        """The rows of the id in the path: one, or every version of a surface or profile, latest first."""
        rows = self.get_queryset().filter(key=self.resource_id())
        return rows.order_by("-version") if self.versioned else rows

    def get_object(self):
        found = self.versions().first()
        if found is None:
            raise self.not_found()
        return found


class DeclaredListView(mixins.ListModelMixin, DeclaredView):
    def get(self, request, *args, **kwargs):
        return self.list(request, *args, **kwargs)


class PagedListSchema(AutoSchema):
    """Documents the filters although the answer (array or page) is not a plain list."""

    def get_filter_backends(self):
        return self.view.filter_backends


class PagedListView(DeclaredView):
    """A whole-organization list, by id: a plain array of at most ``PLAIN_LIST_CAP`` rows (the
    ``X-Mandate-Truncated: true`` header says more exist), or with ``limit``/``cursor`` one page
    ``{"items", "next_cursor"}`` — the answers of ``GET /v1/envelopes``."""

    schema = PagedListSchema()

    def get(self, request, *args, **kwargs):
        return list_response(
            request,
            self.filter_queryset(self.get_queryset()),
            capped=capped_list,
            page=page_by_id,
            render=lambda rows: self.get_serializer(rows, many=True).data,
            default_page_size=DEFAULT_PAGE_SIZE,
        )


PAGE_PARAMETERS = [
    OpenApiParameter(
        "limit",
        OpenApiTypes.INT,
        description=f"Page size, 1..{MAX_LIMIT} (default {DEFAULT_PAGE_SIZE}). Giving `limit` or `cursor` "
        'switches the answer to a page `{"items": [...], "next_cursor": ...}`.',
    ),
    OpenApiParameter("cursor", OpenApiTypes.STR, description="The `next_cursor` of the previous page (opaque)."),
]


def paged_list(summary: str, tags: list[str], serializer, name: str, operation_id: str):
    """The schema of a ``PagedListView``: its filters, ``limit``/``cursor``, and both answers."""
    page = inline_serializer(
        f"{name}Page",
        {
            "items": serializer(many=True, read_only=True),
            "next_cursor": drf_serializers.CharField(read_only=True, allow_null=True),
        },
    )
    answer = PolymorphicProxySerializer(
        component_name=f"{name}List",
        serializers=[serializer(many=True), page],
        resource_type_field_name=None,
        many=False,
    )
    description = (
        f"Ordered by id. Without `limit`/`cursor`: a plain JSON array of at most {PLAIN_LIST_CAP} "
        f"(the `{TRUNCATED_HEADER}: true` header says more exist). With them: one page."
    )
    return documented(
        summary,
        tags,
        operation_id=operation_id,
        description=description,
        parameters=PAGE_PARAMETERS,
        responses=answer,
    )


class DeclaredDetailView(mixins.RetrieveModelMixin, DeclaredView):
    """One resource; for surfaces and profiles, the latest version."""

    def get(self, request, *args, **kwargs):
        return self.retrieve(request, *args, **kwargs)


class DeclaredVersionsView(DeclaredView):
    def get(self, request, *args, **kwargs):
        rows = list(self.versions())
        if not rows:
            raise self.not_found()
        return Response(self.get_serializer(rows, many=True).data)


class RecoveryView(DeclaredView):
    """Renders ``report()``, the recovery analysis of the id's versions (``None``: unknown id).
    Each subclass defines ``report`` for its kind."""

    def get(self, request, *args, **kwargs):
        report = self.report()
        if report is None:
            raise self.not_found()
        return Response(self.get_serializer(asdict(report)).data)


def required_query_identifier(request, name: str) -> str:
    """A query parameter that must be present and be an identifier (MIDAS's 400 messages)."""
    value = request.query_params.get(name, "")
    if not value:
        raise APIError(400, f"{name} query parameter is required")
    if not is_identifier(value):
        raise APIError(400, f"invalid {name}")
    return value


def documented(summary: str, tags: list[str], **kwargs):
    return extend_schema_view(get=extend_schema(summary=summary, tags=tags, **kwargs))


# --- surfaces -------------------------------------------------------------------------------


@paged_list(
    "Surfaces (latest version of each)",
    INTROSPECTION_TAGS,
    serializers.SurfaceSerializer,
    "Surface",
    operation_id="v1_surfaces_list",
)
class SurfaceListView(PagedListView):
    """Every surface at its latest version, as ``GET /v1/surfaces/{id}`` shows it; filters ask
    about that latest version."""

    queryset = Surface.objects.all()
    serializer_class = serializers.SurfaceSerializer
    filterset_class = SurfaceFilterSet
    noun = "surface"

    def get_queryset(self):
        return latest_versions(super().get_queryset())


@documented("Latest version of a surface", INTROSPECTION_TAGS)
class SurfaceDetailView(DeclaredDetailView):
    queryset = Surface.objects.all()
    serializer_class = serializers.SurfaceSerializer
    noun = "surface"


@documented(
    "All versions of a surface, latest first",
    INTROSPECTION_TAGS,
    responses=serializers.SurfaceVersionSerializer(many=True),
)
class SurfaceVersionsView(DeclaredVersionsView):
    queryset = Surface.objects.all()
    serializer_class = serializers.SurfaceVersionSerializer
    noun = "surface"


@documented("Recovery analysis of a surface (read-only)", INTROSPECTION_TAGS)
class SurfaceRecoveryView(RecoveryView):
    queryset = Surface.objects.all()
    serializer_class = serializers.SurfaceRecoverySerializer
    noun = "surface"

    def report(self):
        return surface_recovery(self.versions())


# --- profiles -------------------------------------------------------------------------------


@documented("Profiles attached to a surface (latest version of each)", INTROSPECTION_TAGS)
class ProfileListView(DeclaredListView):
    queryset = Profile.objects.all()
    serializer_class = serializers.ProfileSerializer
    filterset_class = ProfileFilterSet
    noun = "profile"

    def get_queryset(self):
        required_query_identifier(self.request, "surface_id")
        return latest_versions(super().get_queryset()).order_by("key")


@documented("Latest version of a profile", INTROSPECTION_TAGS)
class ProfileDetailView(DeclaredDetailView):
    queryset = Profile.objects.all()
    serializer_class = serializers.ProfileSerializer
    noun = "profile"


@documented(
    "All versions of a profile, latest first",
    INTROSPECTION_TAGS,
    responses=serializers.ProfileVersionSerializer(many=True),
)
class ProfileVersionsView(DeclaredVersionsView):
    queryset = Profile.objects.all()
    serializer_class = serializers.ProfileVersionSerializer
    noun = "profile"


@documented("Recovery analysis of a profile (read-only)", INTROSPECTION_TAGS)
class ProfileRecoveryView(RecoveryView):
    queryset = Profile.objects.all()
    serializer_class = serializers.ProfileRecoverySerializer
    noun = "profile"

    def report(self):
        return profile_recovery(self.versions(), Grant.objects.filter(organization=self.organization))


# --- agents and grants ----------------------------------------------------------------------


@paged_list("Agents", INTROSPECTION_TAGS, serializers.AgentSerializer, "Agent", operation_id="v1_agents_list")
class AgentListView(PagedListView):
    queryset = Agent.objects.all()
    serializer_class = serializers.AgentSerializer
    filterset_class = AgentFilterSet
    noun = "agent"


@documented("An agent", INTROSPECTION_TAGS)
class AgentDetailView(DeclaredDetailView):
    queryset = Agent.objects.all()
    serializer_class = serializers.AgentSerializer
    noun = "agent"


@documented("Grants of an agent or of a profile (exactly one of agent_id, profile_id)", INTROSPECTION_TAGS)
class GrantListView(DeclaredListView):
    queryset = Grant.objects.select_related("agent")
    serializer_class = serializers.GrantSerializer
    filterset_class = GrantFilterSet
    noun = "grant"

    def get_queryset(self):
        given = [name for name in ("agent_id", "profile_id") if self.request.query_params.get(name)]
        if not given:
            raise APIError(400, "agent_id or profile_id query parameter is required")
        if len(given) > 1:
            raise APIError(400, "only one of agent_id or profile_id may be specified")
        required_query_identifier(self.request, given[0])
        return super().get_queryset()


@documented("A grant", INTROSPECTION_TAGS)
class GrantDetailView(DeclaredDetailView):
    queryset = Grant.objects.select_related("agent")
    serializer_class = serializers.GrantSerializer
    noun = "grant"


# --- structure: capabilities, processes, business services ----------------------------------


@documented("Capabilities", STRUCTURE_TAGS)
class CapabilityListView(DeclaredListView):
    queryset = Capability.objects.all()
    serializer_class = serializers.CapabilitySerializer
    filterset_class = CapabilityFilterSet
    noun = "capability"


@documented("A capability", STRUCTURE_TAGS)
class CapabilityDetailView(DeclaredDetailView):
    queryset = Capability.objects.all()
    serializer_class = serializers.CapabilitySerializer
    noun = "capability"


@documented("Processes", STRUCTURE_TAGS)
class ProcessListView(DeclaredListView):
    queryset = Process.objects.select_related("business_service")
    serializer_class = serializers.ProcessSerializer
    filterset_class = ProcessFilterSet
    noun = "process"


@documented("A process", STRUCTURE_TAGS)
class ProcessDetailView(DeclaredDetailView):
    queryset = Process.objects.select_related("business_service")
    serializer_class = serializers.ProcessSerializer
    noun = "process"


@documented("Surfaces of a process (latest version of each)", STRUCTURE_TAGS)
class ProcessSurfacesView(DeclaredListView):
    """Surfaces whose latest version belongs to the process, at that latest version."""

    queryset = Surface.objects.all()
    serializer_class = serializers.SurfaceSerializer
    filterset_class = SurfaceFilterSet
    noun = "process"

    def get_queryset(self):
        process = Process.objects.filter(organization=self.organization, key=self.resource_id()).first()
        if process is None:
            raise self.not_found()
        return latest_versions(super().get_queryset()).filter(process=process).order_by("key")


@documented("Business services", STRUCTURE_TAGS)
class BusinessServiceListView(DeclaredListView):
    queryset = BusinessService.objects.all()
    serializer_class = serializers.BusinessServiceSerializer
    filterset_class = BusinessServiceFilterSet
    noun = "business service"


@documented("A business service", STRUCTURE_TAGS)
class BusinessServiceDetailView(DeclaredDetailView):
    queryset = BusinessService.objects.all()
    serializer_class = serializers.BusinessServiceSerializer
    noun = "business service"
