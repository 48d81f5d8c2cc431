from django.contrib import admin, messages
from django.contrib.auth.admin import UserAdmin
from django.template.response import TemplateResponse

from governance.choices import TokenStatus
from governance.forms import ApiTokenForm
from governance.models import ApiToken, Organization, Person, RoleAssignment, Team, TeamMembership
from governance.services.tokens import prepare_token_secret, revoke_token


@admin.register(Organization)
class OrganizationAdmin(admin.ModelAdmin):
    list_display = ("name", "slug", "created_at")
    search_fields = ("name", "slug")
    prepopulated_fields = {"slug": ("name",)}


class RoleAssignmentInline(admin.TabularInline):
    model = RoleAssignment
    extra = 0


class TeamMembershipInline(admin.TabularInline):
    model = TeamMembership
    extra = 0
    autocomplete_fields = ("person",)


@admin.register(Person)
class PersonAdmin(UserAdmin):
    list_display = ("username", "email", "first_name", "last_name", "organization", "manager", "is_staff")
    list_filter = ("organization", "is_staff", "is_active", "role_assignments__role")
    search_fields = ("username", "email", "first_name", "last_name")
    autocomplete_fields = ("manager",)
    inlines = [RoleAssignmentInline]
    fieldsets = UserAdmin.fieldsets + (
        ("Organization", {"fields": ("organization", "manager", "must_change_password")}),
    )
    add_fieldsets = UserAdmin.add_fieldsets + (("Organization", {"fields": ("organization", "manager")}),)


@admin.register(Team)
class TeamAdmin(admin.ModelAdmin):
    list_display = ("name", "organization")
    list_filter = ("organization",)
    search_fields = ("name",)
    inlines = [TeamMembershipInline]


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    form = ApiTokenForm
    list_display = ("name", "principal", "prefix", "status", "created_at", "expires_at", "last_used_at")
    list_filter = ("status",)
    search_fields = ("name", "prefix", "principal__username")
    autocomplete_fields = ("principal",)
    actions = ["revoke"]

    def get_readonly_fields(self, request, obj=None):
        # A token's principal and roles are fixed at creation; change means a new token.
        if obj is not None:
            return ("name", "principal", "roles", "prefix", "status", "created_at", "expires_at", "last_used_at")
        return ()

    def save_model(self, request, obj, form, change):
        if not change:
            request._mandate_token_secret = prepare_token_secret(obj)
        super().save_model(request, obj, form, change)

    def response_add(self, request, obj, post_url_continue=None):
        # The secret is rendered into this one response and stored nowhere.
        return TemplateResponse(
            request,
            "admin/governance/apitoken/created.html",
            {
                **self.admin_site.each_context(request),
                "token": obj,
                "secret": request._mandate_token_secret,
                "opts": self.model._meta,
                "title": "API token created",
            },
        )

    @admin.action(description="Revoke selected tokens")
    def revoke(self, request, queryset):
        for token in queryset.filter(status=TokenStatus.ACTIVE):
            revoke_token(token)
        self.message_user(request, "Revoked.", messages.SUCCESS)
