"""The console's entitlements pages: balances and expiry (with "Issue runs" for partner
admins), each run's timeline with its seal, redemptions, and issuance tokens (shown once).
Organization-scoped like the control plane's pages; everything is read-only except through
the services (issue, set a status entitlement, make or revoke a token)."""

from datetime import UTC

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html
from django.utils.safestring import mark_safe

from entitlements.choices import EntitlementKind
from entitlements.forms import IssuanceTokenForm, IssueRunsForm
from entitlements.models import Entitlement, IssuanceToken, Run, SealRedemption
from entitlements.services.issuance import issue_runs
from entitlements.services.issuers import make_issuance_token, revoke_issuance_token
from evidence.models import AuditEvent
from evidence.performers import PerformerNames
from governance.console import OrganizationScopedAdmin, console_organization
from governance.errors import DomainError


class ScopedAdmin(OrganizationScopedAdmin):
    """The control plane's organization-scoped, read-only pages; issuing is for its writers."""

    def may_issue(self, request) -> bool:
        return self.may_apply(request)


@admin.register(Entitlement)
class EntitlementAdmin(ScopedAdmin):
    list_display = ("entitlement_id", "principal", "plan_id", "kind", "balance", "expires_at", "status_label")
    list_filter = ("kind", "plan_id", "entitlement_status")
    search_fields = ("entitlement_id", "principal", "plan_id")
    fields = (
        "entitlement_id",
        "organization",
        "kind",
        "principal",
        "plan_id",
        "runs_total",
        "runs_remaining",
        "entitlement_status",
        "expires_at",
        "issued_by",
        "created_at",
        "updated_at",
        "recent_runs",
    )
    readonly_fields = fields
    change_list_template = "admin/entitlements/entitlement/change_list.html"

    @admin.display(description="Runs left")
    def balance(self, obj):
        if obj.kind != EntitlementKind.RUNS:
            return "—"
        return f"{obj.runs_remaining} of {obj.runs_total}"

    @admin.display(description="Status")
    def status_label(self, obj):
        return obj.status

    @admin.display(description="Runs")
    def recent_runs(self, obj):
        rows = obj.runs.order_by("-consumed_at")[:20]
        if not rows:
            return "—"
        items = "".join(
            format_html(
                '<li><a href="{}">{}</a> · {}</li>',
                reverse("admin:entitlements_run_change", args=[run.pk]),
                run.run_id,
                run.state,
            )
            for run in rows
        )
        return mark_safe(f"<ul>{items}</ul>")  # noqa: S308 (each item escaped by format_html)

    def get_urls(self):
        issue = path("issue/", self.admin_site.admin_view(self.issue_view), name="entitlements_entitlement_issue")
        return [issue, *super().get_urls()]

    def changelist_view(self, request, extra_context=None):
        extra_context = {**(extra_context or {}), "may_issue": self.may_issue(request)}
        return super().changelist_view(request, extra_context)

    def issue_view(self, request):
        """Issue runs, through the service ``POST /api/entitlement/issue`` uses."""
        if not self.may_issue(request):
            raise PermissionDenied
        organization = console_organization(request)
        form = IssueRunsForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            data = form.cleaned_data
            expires_at = data["expires_at"]
            if expires_at.tzinfo is None:
                expires_at = expires_at.replace(tzinfo=UTC)
            try:
                entitlement = issue_runs(
                    organization.pk,
                    principal=data["principal"],
                    plan_id=data["plan_id"],
                    runs_total=data["runs_total"],
                    expires_at=expires_at,
                    issued_by=request.user.username,
                )
            except DomainError as exc:
                form.add_error(None, exc.message)
            else:
                self.message_user(
                    request,
                    f"Issued {data['runs_total']} runs to {entitlement.principal} ({entitlement.plan_id}): "
                    f"{entitlement.runs_remaining} of {entitlement.runs_total} left.",
                    messages.SUCCESS,
                )
                return redirect(reverse("admin:entitlements_entitlement_change", args=[entitlement.pk]))
        return TemplateResponse(
            request,
            "admin/entitlements/entitlement/issue.html",
            {
                **self.admin_site.each_context(request),
                "opts": self.model._meta,
                "title": "Issue runs",
                "form": form,
                "organization": organization,
            },
        )


@admin.register(Run)
class RunAdmin(ScopedAdmin):
    list_display = ("run_id", "principal", "entitlement", "state", "consumed_at", "completed_at", "seal_id")
    list_filter = ("state",)
    search_fields = ("run_id", "principal", "seal_id", "entitlement__entitlement_id")
    list_select_related = ("entitlement",)
    change_form_template = "admin/entitlements/run/change_form.html"
    fields = (
        "run_id",
        "principal",
        "entitlement",
        "state",
        "inputs_sha256",
        "container_image",
        "project_id",
        "outputs_sha256",
        "run_manifest_sha256",
        "seal_id",
    )
    readonly_fields = fields

    def change_view(self, request, object_id, form_url="", extra_context=None):
        run = self.get_object(request, object_id)
        extra = {}
        if run is not None:
            events = list(AuditEvent.objects.filter(chain_id=run.chain_id).order_by("sequence_no"))
            names = PerformerNames.of(run.organization_id, [(e.performer_type, e.performer_id) for e in events])
            extra = {
                "timeline": [{"event": e, "performer": names.label(e.performer_type, e.performer_id)} for e in events],
                "seal_svg": run.seal_svg,
                "zip_url": reverse("gbx-seal-zip", args=[run.run_id]),
            }
        return super().change_view(request, object_id, form_url, {**(extra_context or {}), **extra})


@admin.register(SealRedemption)
class SealRedemptionAdmin(ScopedAdmin):
    list_display = ("seal_id", "principal", "entitlement", "sealed_run", "redeemed_at")
    search_fields = ("seal_id", "principal")
    list_select_related = ("entitlement", "sealed_run")
    fields = ("seal_id", "principal", "entitlement", "sealed_run", "redeemed_at")
    readonly_fields = fields


@admin.register(IssuanceToken)
class IssuanceTokenAdmin(ScopedAdmin):
    """X-GBX-ADMIN-TOKENs: made here, shown once, revocable."""

    list_display = ("name", "prefix", "created_by", "created_at", "last_used_at", "revoked_at")
    fields = ("name", "prefix", "created_by", "created_at", "last_used_at", "revoked_at")
    readonly_fields = fields
    actions = ["revoke"]

    def has_add_permission(self, request):
        return self.may_issue(request)

    def has_change_permission(self, request, obj=None):
        return obj is None and self.may_issue(request)  # the revoke action only

    def add_view(self, request, form_url="", extra_context=None):
        if not self.has_add_permission(request):
            raise PermissionDenied
        form = IssuanceTokenForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            token, secret = make_issuance_token(
                console_organization(request), form.cleaned_data["name"], request.user.username
            )
            return TemplateResponse(
                request,
                "admin/entitlements/issuancetoken/created.html",
                {
                    **self.admin_site.each_context(request),
                    "opts": self.model._meta,
                    "token": token,
                    "secret": secret,
                    "title": "Issuance token created",
                },
            )
        return TemplateResponse(
            request,
            "admin/entitlements/issuancetoken/add.html",
            {
                **self.admin_site.each_context(request),
                "opts": self.model._meta,
                "form": form,
                "title": "New issuance token",
            },
        )

    @admin.action(description="Revoke selected tokens")
    def revoke(self, request, queryset):
        if not self.may_issue(request):
            raise PermissionDenied
        for token in queryset:
            revoke_issuance_token(token)
        self.message_user(request, "Revoked.", messages.SUCCESS)
