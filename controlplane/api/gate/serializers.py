"""Request and response shapes of the gate's catalogue and operator endpoints (for the
OpenAPI schema and for parsing; the rules on the values are the services')."""

from rest_framework import serializers

from controlplane.choices import ActionRisk, TargetSource
from governance.api.fields import StringField


def _text(**kwargs):
    return StringField(allow_blank=True, trim_whitespace=False, **kwargs)


class ErrorSerializer(serializers.Serializer):
    error = serializers.CharField()
    detail = serializers.CharField(required=False)


class ActionSummarySerializer(serializers.Serializer):
    action_id = serializers.CharField()
    version = serializers.CharField()
    risk_level = serializers.ChoiceField(ActionRisk.choices)
    description = serializers.CharField(allow_blank=True)
    database_mode = serializers.CharField(allow_null=True)


class ActionListSerializer(serializers.Serializer):
    actions = ActionSummarySerializer(many=True)


class EgressSerializer(serializers.Serializer):
    profile = serializers.ChoiceField(["none", "proxy_allowlist"])
    proxy_allowlist = serializers.DictField(required=False)
    allowed_methods = serializers.ListField(child=serializers.CharField(), required=False)


class SecretDeclarationSerializer(serializers.Serializer):
    name = serializers.CharField()
    required = serializers.BooleanField()


class ActionDetailSerializer(serializers.Serializer):
    action_id = serializers.CharField()
    version = serializers.CharField()
    description = serializers.CharField(allow_blank=True)
    provider_module_digest = serializers.CharField()
    required_imports = serializers.ListField(child=serializers.CharField())
    resource_limits = serializers.DictField()
    io = serializers.DictField()
    egress = EgressSerializer()
    secrets = SecretDeclarationSerializer(many=True)
    risk_level = serializers.ChoiceField(ActionRisk.choices)
    declared_side_effects = serializers.ListField(child=serializers.CharField())
    required_scopes = serializers.ListField(child=serializers.CharField())
    verifier_kind = serializers.CharField()
    verification_config = serializers.DictField()
    template = serializers.DictField(allow_null=True)
    fs = serializers.DictField(allow_null=True)
    database_mode = serializers.CharField(allow_null=True)


# --- policy ------------------------------------------------------------------------------------


class PrincipalAclSerializer(serializers.Serializer):
    actions = serializers.ListField(child=serializers.CharField())
    sinks = serializers.ListField(child=serializers.CharField())
    inherits_wildcard = serializers.BooleanField()


class PolicySerializer(serializers.Serializer):
    policy_version = serializers.CharField()
    principals = serializers.DictField(child=PrincipalAclSerializer())
    allowlist = serializers.DictField(child=serializers.DictField(child=serializers.BooleanField()))


class PrincipalSerializer(serializers.Serializer):
    principal = serializers.CharField()
    actions = serializers.ListField(child=serializers.CharField())
    sinks = serializers.ListField(child=serializers.CharField())


class PrincipalDetailSerializer(PrincipalSerializer):
    inherits_wildcard = serializers.BooleanField()
    risk_breakdown = serializers.DictField(child=serializers.ListField(child=serializers.CharField()))


class GrantRequestSerializer(serializers.Serializer):
    principal = _text()
    actions = serializers.ListField(child=_text(), allow_empty=True)
    inherits_wildcard = serializers.BooleanField(required=False, allow_null=True, default=None)


class RevokeRequestSerializer(serializers.Serializer):
    principal = _text()
    actions = serializers.ListField(child=_text(), allow_empty=True)


class AllowlistRequestSerializer(serializers.Serializer):
    action_id = _text()
    agent_id = _text()


class AllowlistResponseSerializer(serializers.Serializer):
    ok = serializers.BooleanField()
    action_id = serializers.CharField()
    agent_id = serializers.CharField()


# --- learned targets ---------------------------------------------------------------------------


class LearnedDomainSerializer(serializers.Serializer):
    domain = serializers.CharField()
    action_id = serializers.CharField()
    source = serializers.ChoiceField(TargetSource.choices)
    added_by = serializers.CharField()
    added_at = serializers.DateTimeField()
    approval_id = serializers.CharField(allow_null=True)


class LearnedPathSerializer(serializers.Serializer):
    path = serializers.CharField()
    action_id = serializers.CharField()
    source = serializers.ChoiceField(TargetSource.choices)
    added_by = serializers.CharField()
    added_at = serializers.DateTimeField()
    approval_id = serializers.CharField(allow_null=True)


class DomainListSerializer(serializers.Serializer):
    domains = LearnedDomainSerializer(many=True)


class PathListSerializer(serializers.Serializer):
    paths = LearnedPathSerializer(many=True)


class DomainRequestSerializer(serializers.Serializer):
    action_id = _text()
    domain = _text()


class DomainResponseSerializer(serializers.Serializer):
    domain = serializers.CharField()
    action_id = serializers.CharField()


class PathRequestSerializer(serializers.Serializer):
    action_id = _text()
    path = _text(required=False)
    path_glob = _text(required=False)  # LatchGate's CLI name for it

    def validate(self, attrs):
        if ("path" in attrs) == ("path_glob" in attrs):
            raise serializers.ValidationError({"path": "give path (or path_glob), once"})
        return attrs


class PathResponseSerializer(serializers.Serializer):
    path = serializers.CharField()
    action_id = serializers.CharField()


class RemovedSerializer(serializers.Serializer):
    removed = serializers.BooleanField()


class ClearedSerializer(serializers.Serializer):
    cleared = serializers.BooleanField()
    deleted_count = serializers.IntegerField()


class ReloadSerializer(serializers.Serializer):
    manifests_loaded = serializers.IntegerField()
    policy_reloaded = serializers.BooleanField()
    reloaded_at = serializers.DateTimeField()
