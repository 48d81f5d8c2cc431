"""Wire shapes of the MIDAS introspection and structural endpoints (output only).

Field names and sets are the reference page's. A resource's ``id`` is the model's ``key``
(the database pk never leaves Mandate); timestamps are RFC 3339 strings, ``null`` when unset.
"""

from drf_spectacular.utils import PolymorphicProxySerializer, extend_schema_field
from rest_framework import serializers

from controlplane.choices import (
    BusinessServiceStatus,
    GrantStatus,
    ProfileStatus,
    RiskRating,
    StructuralStatus,
    SurfaceStatus,
)
from controlplane.models import Agent, BusinessService, Capability, Grant, Process, Profile, Surface


def status_field(choices) -> serializers.CharField:
    """A ``status`` documented as a string listing its values, not as a named enum: each kind
    has its own status set, and one OpenAPI enum name for all of them would collide."""
    return serializers.CharField(read_only=True, help_text="One of: " + ", ".join(choices.values))


class SurfaceSerializer(serializers.ModelSerializer):
    id = serializers.CharField(source="key")
    status = status_field(SurfaceStatus)

    class Meta:
        model = Surface
        fields = [
            "id",
            "name",
            "status",
            "version",
            "effective_from",
            "approved_at",
            "approved_by",
            "successor_surface_id",
            "deprecation_reason",
            "domain",
            "business_owner",
            "technical_owner",
        ]
        read_only_fields = fields


class SurfaceVersionSerializer(serializers.ModelSerializer):
    status = status_field(SurfaceStatus)

    class Meta:
        model = Surface
        fields = ["version", "status", "effective_from", "approved_at", "approved_by", "created_at", "updated_at"]
        read_only_fields = fields


class MonetaryThresholdSerializer(serializers.Serializer):
    """``{type: monetary, amount, currency}``."""

    type = serializers.CharField(help_text="Always `monetary`.")
    amount = serializers.FloatField(allow_null=True)
    currency = serializers.CharField()


class RiskRatingThresholdSerializer(serializers.Serializer):
    """``{type: risk_rating, risk_rating}``."""

    type = serializers.CharField(help_text="Always `risk_rating`.")
    risk_rating = serializers.CharField(help_text="One of: " + ", ".join(RiskRating.values))


@extend_schema_field(
    PolymorphicProxySerializer(
        component_name="ConsequenceThreshold",
        serializers={"monetary": MonetaryThresholdSerializer, "risk_rating": RiskRatingThresholdSerializer},
        resource_type_field_name="type",
    )
)
class ConsequenceThresholdField(serializers.JSONField):
    """A profile's threshold as ``Profile.consequence_threshold`` gives it (``null`` when none):
    one of two shapes, told apart by ``type``."""


class ProfileSerializer(serializers.ModelSerializer):
    id = serializers.CharField(source="key")
    surface_id = serializers.CharField(source="surface_key")
    required_context_keys = serializers.ListField(child=serializers.CharField())
    consequence_threshold = ConsequenceThresholdField(read_only=True, allow_null=True)
    status = status_field(ProfileStatus)

    class Meta:
        model = Profile
        fields = [
            "id",
            "version",
            "surface_id",
            "name",
            "description",
            "status",
            "effective_date",
            "confidence_threshold",
            "consequence_threshold",
            "escalation_mode",
            "fail_mode",
            "policy_reference",
            "required_context_keys",
            "created_at",
            "updated_at",
            "approved_by",
            "approved_at",
        ]
        read_only_fields = fields


class ProfileVersionSerializer(serializers.ModelSerializer):
    id = serializers.CharField(source="key")
    surface_id = serializers.CharField(source="surface_key")
    consequence_threshold = ConsequenceThresholdField(read_only=True, allow_null=True)
    status = status_field(ProfileStatus)

    class Meta:
        model = Profile
        fields = [
            "id",
            "version",
            "surface_id",
            "name",
            "status",
            "effective_date",
            "confidence_threshold",
            "consequence_threshold",
            "escalation_mode",
            "fail_mode",
            "created_at",
            "updated_at",
        ]
        read_only_fields = fields


class AgentSerializer(serializers.ModelSerializer):
    id = serializers.CharField(source="key")

    class Meta:
        model = Agent
        fields = [
            "id",
            "name",
            "type",
            "owner",
            "model_version",
            "endpoint",
            "operational_state",
            "created_at",
            "updated_at",
        ]
        read_only_fields = fields


class GrantSerializer(serializers.ModelSerializer):
    id = serializers.CharField(source="key")
    agent_id = serializers.CharField(source="agent.key")
    profile_id = serializers.CharField(source="profile_key")
    status = status_field(GrantStatus)

    class Meta:
        model = Grant
        fields = [
            "id",
            "agent_id",
            "profile_id",
            "status",
            "granted_by",
            "effective_from",
            "effective_until",
            "created_at",
            "updated_at",
        ]
        read_only_fields = fields


class CapabilitySerializer(serializers.ModelSerializer):
    id = serializers.CharField(source="key")
    status = status_field(StructuralStatus)

    class Meta:
        model = Capability
        fields = ["id", "name", "description", "status", "owner", "created_at", "updated_at"]
        read_only_fields = fields


class ProcessSerializer(serializers.ModelSerializer):
    id = serializers.CharField(source="key")
    business_service_id = serializers.CharField(source="business_service.key")
    status = status_field(StructuralStatus)

    class Meta:
        model = Process
        fields = ["id", "name", "business_service_id", "description", "status", "owner", "created_at", "updated_at"]
        read_only_fields = fields


class BusinessServiceSerializer(serializers.ModelSerializer):
    id = serializers.CharField(source="key")
    status = status_field(BusinessServiceStatus)

    class Meta:
        model = BusinessService
        fields = ["id", "name", "description", "service_type", "regulatory_scope", "status", "created_at", "updated_at"]
        read_only_fields = fields


# --- recovery (computed, not model rows) ----------------------------------------------------


class SurfaceRecoverySerializer(serializers.Serializer):
    surface_id = serializers.CharField()
    latest_version = serializers.IntegerField()
    latest_status = serializers.CharField()
    active_version = serializers.IntegerField(allow_null=True)
    active_status = serializers.CharField(allow_null=True)
    successor_surface_id = serializers.CharField(allow_blank=True)
    deprecation_reason = serializers.CharField(allow_blank=True)
    version_count = serializers.IntegerField()
    warnings = serializers.ListField(child=serializers.CharField())
    recommended_next_actions = serializers.ListField(child=serializers.CharField())


class ProfileRecoveryVersionSerializer(serializers.Serializer):
    version = serializers.IntegerField()
    status = serializers.CharField()
    effective_from = serializers.DateTimeField(allow_null=True)


class ProfileRecoverySerializer(serializers.Serializer):
    profile_id = serializers.CharField()
    surface_id = serializers.CharField()
    latest_version = serializers.IntegerField()
    latest_status = serializers.CharField()
    active_version = serializers.IntegerField(allow_null=True)
    active_status = serializers.CharField(allow_null=True)
    version_count = serializers.IntegerField()
    versions = ProfileRecoveryVersionSerializer(many=True)
    active_grant_count = serializers.IntegerField()
    capability_note = serializers.CharField()
    warnings = serializers.ListField(child=serializers.CharField())
    recommended_next_actions = serializers.ListField(child=serializers.CharField())
