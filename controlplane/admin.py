"""The control-plane console: read-only pages for every declared kind, lifecycle actions on
surfaces, profiles and grants, and bundle upload.

Declarations change only through bundles and lifecycle actions, so nothing here adds,
edits or deletes a row directly: "Add" opens the bundle upload page, and the lifecycle
buttons call ``controlplane.services.lifecycle``. Pages open to people holding a reader
or lifecycle role (``CONSOLE_ROLES``) and show their own organization's declarations
(superusers see every organization).
"""

from django.contrib import admin, messages
from django.contrib.admin.utils import flatten_fieldsets, unquote
from django.core.exceptions import PermissionDenied
from django.http import HttpResponseNotAllowed
from django.shortcuts import redirect
from django.urls import path, reverse
from django.utils.html import format_html, format_html_join

from controlplane import admin_views
from controlplane.admin_views import (
    NEEDS_LIFECYCLE_ROLE,
    ReasonForm,
    SurfaceApprovalForm,
    SurfaceDeprecationForm,
    form_error_text,
    has_any_role,
    principal_of,
    refusal_message,
)
from controlplane.api.base import LIFECYCLE_ROLES
from controlplane.models import (
    Agent,
    BusinessService,
    BusinessServiceCapability,
    Capability,
    Grant,
    Policy,
    Process,
    Profile,
    Surface,
)
from controlplane.services import lifecycle
from controlplane.services.recovery import latest_versions, profile_recovery, surface_recovery
from evidence.models import ControlPlaneAuditRecord
from governance.console import OrganizationScopedAdmin
from governance.errors import DomainError

AUDIT_ROWS = 25  # audit records shown on a change page; the API has the rest


# --- shared ---------------------------------------------------------------------------------


class LatestVersionFilter(admin.SimpleListFilter):
    title = "version"
    parameter_name = "versions"

    def lookups(self, request, model_admin):
        return [("latest", "Latest version only")]

    def queryset(self, request, queryset):
        if self.value() == "latest":
            return latest_versions(queryset)
        return queryset


def badge(value: str) -> str:
    """A status as a coloured pill (colour and word, never colour alone)."""
    return format_html('<span class="cp-status cp-status-{}">{}</span>', value or "none", value or "—")


def chips(values) -> str:
    """A list of short words (tags, types, labels) as chips, not as a JSON list."""
    values = [str(v) for v in (values or []) if v not in (None, "")]
    if not values:
        return "—"
    return format_html(
        '<ul class="cp-chips">{}</ul>', format_html_join("", '<li class="cp-chip">{}</li>', ((v,) for v in values))
    )


class ControlPlaneAdmin(OrganizationScopedAdmin):
    """Read-only, organization-scoped pages for a declared kind."""

    search_fields = ("key", "name")
    ordering_field = "key"

    def has_add_permission(self, request):
        # Declarations are added by applying a bundle: "Add" opens the upload page.
        return self.may_apply(request)

    def add_view(self, request, form_url="", extra_context=None):
        if not self.has_add_permission(request):
            raise PermissionDenied
        return redirect(admin_views.bundle_upload_url())

    # --- layout ---

    def get_list_display(self, request):
        columns = tuple(super().get_list_display(request))
        return columns + ("organization",) if request.user.is_superuser else columns

    def get_list_select_related(self, request):
        related = super().get_list_select_related(request)
        if not request.user.is_superuser:
            return related
        return (*(related if isinstance(related, list | tuple) else ()), "organization")

    def get_list_filter(self, request):
        filters = tuple(super().get_list_filter(request))
        return filters + ("organization",) if request.user.is_superuser else filters

    def get_fieldsets(self, request, obj=None):
        fieldsets = super().get_fieldsets(request, obj)
        if not request.user.is_superuser:
            return fieldsets
        # Superusers see every organization's declarations, so say whose this is.
        (title, options), *rest = fieldsets
        return [(title, {**options, "fields": ("organization", *options["fields"])}), *rest]

    def get_readonly_fields(self, request, obj=None):
        return flatten_fieldsets(self.get_fieldsets(request, obj))

    @admin.display(description="ID", ordering="key")
    def logical_id(self, obj):
        return obj.key

    @admin.display(description="Status", ordering="status")
    def status_badge(self, obj):
        return badge(obj.status)

    @admin.display(description="Labels")
    def label_chips(self, obj):
        labels = obj.labels if isinstance(obj.labels, dict) else {}
        return chips(f"{key}: {value}" for key, value in labels.items())

    @admin.display(description="Declared spec (as applied)")
    def declared_spec(self, obj):
        return format_html('<pre class="cp-code">{}</pre>', admin_views._pretty(obj.spec))

    # --- page context ---

    def render_change_form(self, request, context, add=False, change=False, form_url="", obj=None):
        if obj is not None:
            context.update(self.panel_context(request, obj))
            context["audit_records"] = ControlPlaneAuditRecord.objects.filter(
                organization_id=obj.organization_id, resource_kind=self.model._meta.object_name, resource_id=obj.key
            )[:AUDIT_ROWS]
        return super().render_change_form(request, context, add=add, change=change, form_url=form_url, obj=obj)

    def panel_context(self, request, obj) -> dict:
        return {}

    # --- lifecycle actions ---

    def lifecycle_target(self, request, object_id):
        """The object a lifecycle POST acts on, or a response explaining why not."""
        if request.method != "POST":
            return None, HttpResponseNotAllowed(["POST"])
        obj = self.get_object(request, unquote(object_id))
        if obj is None or not self.has_view_permission(request, obj):
            messages.error(request, f"That {self.model._meta.verbose_name} does not exist (any more).")
            return None, redirect(f"admin:controlplane_{self.model._meta.model_name}_changelist")
        if not has_any_role(request, LIFECYCLE_ROLES):
            messages.error(request, NEEDS_LIFECYCLE_ROLE.reason)
            return None, self.back_to(obj)
        return obj, None

    def back_to(self, obj):
        return redirect(f"admin:controlplane_{self.model._meta.model_name}_change", obj.pk)

    def lifecycle_url(self, name: str, obj) -> str:
        return reverse(f"admin:controlplane_{self.model._meta.model_name}_{name}", args=[obj.pk])


def _time_window(start, until) -> str:
    return format_html(
        "{} → {}",
        start.strftime("%Y-%m-%d %H:%M") if start else "open",
        until.strftime("%Y-%m-%d %H:%M") if until else "open",
    )


# --- structure ------------------------------------------------------------------------------


@admin.register(BusinessService)
class BusinessServiceAdmin(ControlPlaneAdmin):
    list_display = ("logical_id", "name", "service_type", "status_badge", "owner_id", "regulatory_scope")
    list_filter = ("status", "service_type", "owner_id")
    fieldsets = (
        (None, {"fields": ("logical_id", "name", "description", "service_type", "status")}),
        ("Ownership", {"fields": ("owner_id", "regulatory_scope", "external_ref")}),
        ("Record", {"classes": ("collapse",), "fields": ("label_chips", "declared_spec", "created_at", "updated_at")}),
    )


@admin.register(Capability)
class CapabilityAdmin(ControlPlaneAdmin):
    list_display = ("logical_id", "name", "status_badge", "owner", "parent")
    list_filter = ("status", "owner")
    list_select_related = ("parent",)
    fieldsets = (
        (None, {"fields": ("logical_id", "name", "description", "status", "owner", "parent")}),
        ("Record", {"classes": ("collapse",), "fields": ("label_chips", "declared_spec", "created_at", "updated_at")}),
    )


@admin.register(BusinessServiceCapability)
class BusinessServiceCapabilityAdmin(ControlPlaneAdmin):
    list_display = ("logical_id", "business_service", "capability")
    list_filter = (
        ("business_service", admin.RelatedOnlyFieldListFilter),
        ("capability", admin.RelatedOnlyFieldListFilter),
    )
    list_select_related = ("business_service", "capability")
    search_fields = ("key", "business_service__key", "capability__key")
    fieldsets = (
        (None, {"fields": ("logical_id", "business_service", "capability")}),
        ("Record", {"classes": ("collapse",), "fields": ("label_chips", "declared_spec", "created_at", "updated_at")}),
    )


@admin.register(Process)
class ProcessAdmin(ControlPlaneAdmin):
    list_display = ("logical_id", "name", "business_service", "parent", "status_badge", "owner")
    list_filter = ("status", ("business_service", admin.RelatedOnlyFieldListFilter), "owner")
    list_select_related = ("business_service", "parent")
    fieldsets = (
        (None, {"fields": ("logical_id", "name", "description", "status")}),
        ("Structure", {"fields": ("business_service", "parent", "owner")}),
        ("Record", {"classes": ("collapse",), "fields": ("label_chips", "declared_spec", "created_at", "updated_at")}),
    )


@admin.register(Policy)
class PolicyAdmin(ControlPlaneAdmin):
    list_display = ("logical_id", "name", "package", "version", "updated_at")
    search_fields = ("key", "name", "package")
    fieldsets = (
        (None, {"fields": ("logical_id", "name", "description", "package", "version")}),
        ("Rego source", {"fields": ("rego_source",)}),
        ("Record", {"classes": ("collapse",), "fields": ("label_chips", "created_at", "updated_at")}),
    )

    @admin.display(description="Source")
    def rego_source(self, obj):
        return format_html('<pre class="cp-code">{}</pre>', obj.source)


# --- surfaces -------------------------------------------------------------------------------


@admin.register(Surface)
class SurfaceAdmin(ControlPlaneAdmin):
    list_display = (
        "logical_id",
        "version",
        "name",
        "status_badge",
        "risk_tier",
        "process",
        "business_owner",
        "effective_from",
    )
    list_filter = (
        LatestVersionFilter,
        "status",
        "risk_tier",
        ("process", admin.RelatedOnlyFieldListFilter),
        "business_owner",
        "technical_owner",
    )
    list_select_related = ("process",)
    search_fields = ("key", "name", "domain", "category")
    fieldsets = (
        (None, {"fields": ("logical_id", "version", "name", "description", "status")}),
        ("Classification", {"fields": ("domain", "category", "risk_tier", "process", "tag_chips")}),
        ("Ownership", {"fields": ("business_owner", "technical_owner")}),
        (
            "Decision requirements",
            {
                "fields": (
                    "required_context_fields",
                    "consequence_type_chips",
                    "minimum_confidence",
                    "policy_package",
                    "policy_version",
                    "failure_mode",
                )
            },
        ),
        (
            "Lifecycle",
            {
                "fields": (
                    "effective_from",
                    "effective_until",
                    "submitted_by",
                    "approved_by",
                    "approved_at",
                    "deprecation_reason",
                    "successor_surface_id",
                )
            },
        ),
        ("Record", {"classes": ("collapse",), "fields": ("label_chips", "declared_spec", "created_at", "updated_at")}),
    )

    @admin.display(description="Tags")
    def tag_chips(self, obj):
        return chips(obj.tags if isinstance(obj.tags, list) else [])

    @admin.display(description="Consequence types")
    def consequence_type_chips(self, obj):
        return chips(obj.consequence_types if isinstance(obj.consequence_types, list) else [])

    @admin.display(description="Required context")
    def required_context_fields(self, obj):
        fields = [f for f in obj.required_context if isinstance(f, dict)]
        if not fields:
            return "—"
        rows = format_html_join(
            "",
            "<tr><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td></tr>",
            (
                (
                    f.get("name", ""),
                    f.get("type", ""),
                    "required" if f.get("required", True) else "optional",
                    f.get("description", ""),
                )
                for f in fields
            ),
        )
        return format_html(
            '<table class="cp-table cp-compact"><thead><tr><th>Name</th><th>Type</th><th></th><th>Description</th>'
            "</tr></thead><tbody>{}</tbody></table>",
            rows,
        )

    def get_urls(self):
        wrap = self.admin_site.admin_view
        return [
            path("bundle/", wrap(self.bundle_view), name="controlplane_bundle_upload"),
            path("<path:object_id>/approve/", wrap(self.approve_view), name="controlplane_surface_approve"),
            path("<path:object_id>/deprecate/", wrap(self.deprecate_view), name="controlplane_surface_deprecate"),
        ] + super().get_urls()

    def bundle_view(self, request):
        return admin_views.bundle_upload_view(self, request)

    def versions_of(self, obj) -> list[Surface]:
        return list(Surface.objects.filter(organization=obj.organization, key=obj.key).order_by("-version"))

    def panel_context(self, request, obj):
        versions = self.versions_of(obj)
        recovery = surface_recovery(Surface.objects.filter(organization=obj.organization, key=obj.key))
        profiles = latest_versions(Profile.objects.filter(organization=obj.organization, surface_key=obj.key))
        return {
            "versions": versions,
            "latest": versions[0],
            "recovery": recovery,
            "actions": admin_views.surface_action_states(request, versions),
            "approve_url": self.lifecycle_url("approve", versions[0]),
            "deprecate_url": self.lifecycle_url("deprecate", obj),
            "deprecation_form": SurfaceDeprecationForm(),
            "surface_profiles": list(profiles.order_by("key")),
        }

    def approve_view(self, request, object_id):
        surface, response = self.lifecycle_target(request, object_id)
        if response:
            return response
        latest = self.versions_of(surface)[0]
        form = SurfaceApprovalForm(request.POST)
        if not form.is_valid() or form.cleaned_data["version"] != latest.version:
            messages.warning(
                request, f"Version v{latest.version} is now the latest. Review it, then approve it if it is right."
            )
            return self.back_to(latest)
        try:
            approved = lifecycle.approve_surface(
                organization=surface.organization,
                surface_id=surface.key,
                principal=principal_of(request),
                submitted_by=latest.submitted_by,
            )
        except DomainError as exc:
            messages.error(request, refusal_message(exc))
            return self.back_to(latest)
        messages.success(request, f"Approved: {approved.key} v{approved.version} is now active.")
        return self.back_to(approved)

    def deprecate_view(self, request, object_id):
        surface, response = self.lifecycle_target(request, object_id)
        if response:
            return response
        form = SurfaceDeprecationForm(request.POST)
        if not form.is_valid():
            messages.error(request, form_error_text(form))
            return self.back_to(surface)
        try:
            deprecated = lifecycle.deprecate_surface(
                organization=surface.organization,
                surface_id=surface.key,
                principal=principal_of(request),
                reason=form.cleaned_data["reason"],
                successor_id=form.cleaned_data["successor_id"].strip(),
            )
        except DomainError as exc:
            messages.error(request, refusal_message(exc))
            return self.back_to(surface)
        messages.success(request, f"Deprecated: {deprecated.key} no longer takes new decisions.")
        return self.back_to(surface)


# --- profiles -------------------------------------------------------------------------------


@admin.register(Profile)
class ProfileAdmin(ControlPlaneAdmin):
    list_display = (
        "logical_id",
        "version",
        "name",
        "surface_id",
        "status_badge",
        "confidence_threshold",
        "consequence",
        "effective_date",
        "approved_by",
    )
    list_filter = (LatestVersionFilter, "status", "surface_key", "escalation_mode", "fail_mode")
    search_fields = ("key", "name", "surface_key", "policy_reference")
    fieldsets = (
        (None, {"fields": ("logical_id", "version", "name", "description", "status", "surface_id")}),
        (
            "Authority",
            {
                "fields": (
                    "confidence_threshold",
                    "consequence",
                    "escalation_mode",
                    "fail_mode",
                    "required_context_keys",
                )
            },
        ),
        ("Policy", {"fields": ("policy_reference",)}),
        ("Lifecycle", {"fields": ("effective_date", "effective_until", "approved_by", "approved_at")}),
        ("Record", {"classes": ("collapse",), "fields": ("label_chips", "declared_spec", "created_at", "updated_at")}),
    )

    @admin.display(description="Surface", ordering="surface_key")
    def surface_id(self, obj):
        return obj.surface_key

    @admin.display(description="Consequence threshold")
    def consequence(self, obj):
        threshold = obj.consequence_threshold
        if not threshold:
            return "—"
        if threshold["type"] == "monetary":
            return f"{threshold['amount']:,.2f} {threshold['currency']}" if threshold["amount"] is not None else "—"
        return f"risk {threshold['risk_rating']}"

    def get_urls(self):
        wrap = self.admin_site.admin_view
        return [
            path("<path:object_id>/approve/", wrap(self.approve_view), name="controlplane_profile_approve"),
            path("<path:object_id>/deprecate/", wrap(self.deprecate_view), name="controlplane_profile_deprecate"),
        ] + super().get_urls()

    def panel_context(self, request, obj):
        versions_qs = Profile.objects.filter(organization=obj.organization, key=obj.key)
        grants = Grant.objects.filter(organization=obj.organization)
        surface = (
            Surface.objects.filter(organization=obj.organization, key=obj.surface_key).order_by("-version").first()
        )
        return {
            "versions": list(versions_qs.order_by("-version")),
            "recovery": profile_recovery(versions_qs, grants),
            "actions": admin_views.profile_action_states(request, obj),
            "approve_url": self.lifecycle_url("approve", obj),
            "deprecate_url": self.lifecycle_url("deprecate", obj),
            "profile_grants": list(grants.filter(profile_key=obj.key).select_related("agent").order_by("key")[:50]),
            "surface": surface,
        }

    def _change_status(self, request, object_id, service, done: str):
        profile, response = self.lifecycle_target(request, object_id)
        if response:
            return response
        try:
            changed = service(
                organization=profile.organization,
                profile_id=profile.key,
                version=profile.version,
                principal=principal_of(request),
            )
        except DomainError as exc:
            messages.error(request, refusal_message(exc))
        else:
            messages.success(request, f"{changed.key} v{changed.version} {done}.")
        return self.back_to(profile)

    def approve_view(self, request, object_id):
        return self._change_status(request, object_id, lifecycle.approve_profile, "approved: it is now active")

    def deprecate_view(self, request, object_id):
        return self._change_status(request, object_id, lifecycle.deprecate_profile, "deprecated")


# --- agents and grants ----------------------------------------------------------------------


@admin.register(Agent)
class AgentAdmin(ControlPlaneAdmin):
    list_display = ("logical_id", "name", "type", "owner", "model_version", "operational_state_badge")
    list_filter = ("operational_state", "type", "owner")
    search_fields = ("key", "name", "owner", "model_version")
    fieldsets = (
        (None, {"fields": ("logical_id", "name", "description", "type", "operational_state")}),
        ("Runtime", {"fields": ("owner", "model_version", "endpoint")}),
        ("Record", {"classes": ("collapse",), "fields": ("label_chips", "declared_spec", "created_at", "updated_at")}),
    )

    @admin.display(description="Operational state", ordering="operational_state")
    def operational_state_badge(self, obj):
        return badge(obj.operational_state)

    def panel_context(self, request, obj):
        return {"agent_grants": list(obj.grants.order_by("key")[:50])}


@admin.register(Grant)
class GrantAdmin(ControlPlaneAdmin):
    list_display = (
        "logical_id",
        "agent",
        "profile_id",
        "status_badge",
        "granted_by",
        "effective_from",
        "effective_until",
    )
    list_filter = ("status", ("agent", admin.RelatedOnlyFieldListFilter), "profile_key", "granted_by")
    list_select_related = ("agent",)
    search_fields = ("key", "agent__key", "profile_key", "granted_by")
    fieldsets = (
        (None, {"fields": ("logical_id", "agent", "profile_id", "status")}),
        ("Granted", {"fields": ("granted_by", "grant_reason", "effective_from", "effective_until")}),
        ("Record", {"classes": ("collapse",), "fields": ("label_chips", "declared_spec", "created_at", "updated_at")}),
    )

    @admin.display(description="Profile", ordering="profile_key")
    def profile_id(self, obj):
        return obj.profile_key

    def get_urls(self):
        wrap = self.admin_site.admin_view
        return [
            path("<path:object_id>/transition/", wrap(self.transition_view), name="controlplane_grant_transition"),
        ] + super().get_urls()

    def panel_context(self, request, obj):
        profile = (
            Profile.objects.filter(organization=obj.organization, key=obj.profile_key).order_by("-version").first()
        )
        return {
            "grant_actions": admin_views.grant_action_states(request, obj),
            "transition_url": self.lifecycle_url("transition", obj),
            "reason_form": ReasonForm(),
            "profile": profile,
        }

    def transition_view(self, request, object_id):
        grant, response = self.lifecycle_target(request, object_id)
        if response:
            return response
        action = request.POST.get("action", "")
        form = ReasonForm(request.POST)
        if action not in lifecycle.GRANT_ACTIONS:
            messages.error(request, "Choose suspend, revoke or reinstate.")
            return self.back_to(grant)
        if not form.is_valid():
            messages.error(request, form_error_text(form))
            return self.back_to(grant)
        try:
            changed = lifecycle.change_grant_status(
                organization=grant.organization,
                grant_id=grant.key,
                action=action,
                principal=principal_of(request),
                reason=form.cleaned_data["reason"],
            )
        except DomainError as exc:
            messages.error(request, refusal_message(exc))
        else:
            messages.success(request, f"Grant {changed.key} is now {changed.status}.")
        return self.back_to(grant)


from controlplane import gate_admin  # noqa: E402, F401  (the action catalogue's pages register themselves)
