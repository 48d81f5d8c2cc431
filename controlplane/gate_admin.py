"""The action catalogue in the console: every action's active manifest listed, and edited as
YAML by operators (``controlplane.gate.editing``: validated whole, written to its file, the
catalogue reloaded for every process, or nothing changed)."""

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html

from controlplane.admin_views import has_any_role
from controlplane.api.base import APPLY_ROLES
from controlplane.gate import audit
from controlplane.gate.editing import current_text, save_manifest
from controlplane.gate.manifests import ManifestError
from controlplane.gate.rego import PolicyError
from controlplane.models import ActionManifest

NEW_MANIFEST = """action_id: my_action
version: "1.0.0"
description: What the action does.
provider_module_digest: "builtin:http_api"
template:
  method: GET
  url_template: "{{url}}"
io:
  request_schema:
    type: object
    required: [url]
    properties:
      url: {type: string}
egress:
  profile: proxy_allowlist
  allowed_domains: [api.example.com]
risk_level: low
verifier_kind: http_status
declared_side_effects: [http_read]
"""


def _operator(request) -> bool:
    return request.user.is_active and (request.user.is_superuser or has_any_role(request, APPLY_ROLES))


@admin.register(ActionManifest)
class ActionManifestAdmin(admin.ModelAdmin):
    list_display = ("action_id", "version", "risk", "provider_module_digest", "source", "loaded_at", "edit")
    list_filter = ("active",)
    search_fields = ("action_id",)
    actions = None

    def get_queryset(self, request):
        return super().get_queryset(request).filter(active=True)

    def has_module_permission(self, request):
        return _operator(request)

    def has_view_permission(self, request, obj=None):
        return _operator(request)

    def has_add_permission(self, request):
        return _operator(request)

    def has_change_permission(self, request, obj=None):
        return False  # edited as YAML on its own page

    def has_delete_permission(self, request, obj=None):
        return False

    @admin.display(description="Risk")
    def risk(self, obj):
        return obj.document.get("risk_level", "")

    @admin.display(description="")
    def edit(self, obj):
        return format_html(
            '<a href="{}">Edit YAML</a>', reverse("admin:controlplane_action_edit", args=[obj.action_id])
        )

    def get_urls(self):
        wrap = self.admin_site.admin_view
        return [
            path("edit/<str:action_id>/", wrap(self.edit_view), name="controlplane_action_edit"),
            path("new/", wrap(self.edit_view), name="controlplane_action_new"),
            *super().get_urls(),
        ]

    def add_view(self, request, form_url="", extra_context=None):
        return redirect("admin:controlplane_action_new")

    def change_view(self, request, object_id, form_url="", extra_context=None):
        row = ActionManifest.objects.filter(pk=object_id).first()
        if row is None:
            return redirect("admin:controlplane_actionmanifest_changelist")
        return redirect("admin:controlplane_action_edit", row.action_id)

    def edit_view(self, request, action_id=None):
        if not _operator(request):
            raise PermissionDenied
        text = current_text(action_id) if action_id else NEW_MANIFEST
        problem, status = "", 200
        if request.method == "POST":
            text = request.POST.get("manifest", "")
            actor = audit.Actor.named(request.user.get_username(), "user")
            try:
                result = save_manifest(action_id, text, actor)
            except (ManifestError, PolicyError) as exc:
                problem, status = str(exc), 400
            else:
                messages.success(
                    request,
                    f"Saved and reloaded: {result.manifests_loaded} actions, catalogue v{result.catalogue_version}.",
                )
                return redirect("admin:controlplane_actionmanifest_changelist")
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": f"Edit {action_id}" if action_id else "New action",
            "action_id": action_id,
            "manifest": text,
            "problem": problem,
        }
        return TemplateResponse(request, "admin/controlplane/actionmanifest/edit.html", context, status=status)
