"""Filters of the read-only control-plane lists (``?status=active&owner=...``).

Every filter is optional unless a view says otherwise; a value a filter cannot take
(an unknown status, an id that is not an id) is a 400, never an empty list.
"""

import django_filters
from django.core.validators import RegexValidator

from controlplane.choices import (
    RESOURCE_ID,
    AgentType,
    BusinessServiceStatus,
    GrantStatus,
    OperationalState,
    ProfileStatus,
    RiskTier,
    ServiceType,
    StructuralStatus,
    SurfaceStatus,
    is_resource_id,
)
from controlplane.models import Agent, BusinessService, Capability, Grant, Process, Profile, Surface

is_identifier = is_resource_id


class IdentifierFilter(django_filters.CharFilter):
    """Matches a related resource by its id (``key``)."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("validators", [RegexValidator(RESOURCE_ID, "invalid identifier")])
        super().__init__(*args, **kwargs)


class BusinessServiceFilterSet(django_filters.FilterSet):
    status = django_filters.ChoiceFilter(choices=BusinessServiceStatus.choices)
    service_type = django_filters.ChoiceFilter(choices=ServiceType.choices)
    owner = django_filters.CharFilter(field_name="owner_id")
    regulatory_scope = django_filters.CharFilter()

    class Meta:
        model = BusinessService
        fields = ["status", "service_type", "owner", "regulatory_scope"]


class CapabilityFilterSet(django_filters.FilterSet):
    status = django_filters.ChoiceFilter(choices=StructuralStatus.choices)
    owner = django_filters.CharFilter()
    parent_capability_id = IdentifierFilter(field_name="parent__key")
    business_service_id = IdentifierFilter(field_name="business_services__key", distinct=True)

    class Meta:
        model = Capability
        fields = ["status", "owner", "parent_capability_id", "business_service_id"]


class ProcessFilterSet(django_filters.FilterSet):
    status = django_filters.ChoiceFilter(choices=StructuralStatus.choices)
    owner = django_filters.CharFilter()
    business_service_id = IdentifierFilter(field_name="business_service__key")
    parent_process_id = IdentifierFilter(field_name="parent__key")

    class Meta:
        model = Process
        fields = ["status", "owner", "business_service_id", "parent_process_id"]


class SurfaceFilterSet(django_filters.FilterSet):
    status = django_filters.ChoiceFilter(choices=SurfaceStatus.choices)
    risk_tier = django_filters.ChoiceFilter(choices=RiskTier.choices)
    domain = django_filters.CharFilter()
    business_owner = django_filters.CharFilter()
    technical_owner = django_filters.CharFilter()

    class Meta:
        model = Surface
        fields = ["status", "risk_tier", "domain", "business_owner", "technical_owner"]


class AgentFilterSet(django_filters.FilterSet):
    type = django_filters.ChoiceFilter(choices=AgentType.choices)
    owner = django_filters.CharFilter()
    operational_state = django_filters.ChoiceFilter(choices=OperationalState.choices)

    class Meta:
        model = Agent
        fields = ["type", "owner", "operational_state"]


class ProfileFilterSet(django_filters.FilterSet):
    # Required by GET /v1/profiles; the view answers MIDAS's 400 before this runs.
    surface_id = IdentifierFilter(field_name="surface_key", required=True)
    status = django_filters.ChoiceFilter(choices=ProfileStatus.choices)

    class Meta:
        model = Profile
        fields = ["surface_id", "status"]


class GrantFilterSet(django_filters.FilterSet):
    # Exactly one of agent_id and profile_id (checked by the view, with MIDAS's messages).
    agent_id = IdentifierFilter(field_name="agent__key")
    profile_id = IdentifierFilter(field_name="profile_key")
    status = django_filters.ChoiceFilter(choices=GrantStatus.choices)

    class Meta:
        model = Grant
        fields = ["agent_id", "profile_id", "status"]
