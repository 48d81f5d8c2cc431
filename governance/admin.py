from django.contrib import admin, messages
from django.contrib.auth.admin import UserAdmin
from django.template.response import TemplateResponse

from governance.choices import Role, TokenStatus
from governance.forms import ApiTokenForm
from governance.gate.operator_keys import revoke_operator_key
from governance.gate.state import advance_epoch, end_drain, start_drain
from governance.models import (
    ApiToken,
    GateLease,
    GateState,
    OperatorKey,
    Organization,
    Person,
    RoleAssignment,
    SiweNonce,
    Team,
    TeamMembership,
    WalletSession,
)
from governance.services.people import person_roles
from governance.services.tokens import prepare_token_secret, revoke_token
from governance.services.wallet_sessions import revoke_wallet_session


@admin.register(Organization)
class OrganizationAdmin(admin.ModelAdmin):
    list_display = ("name", "slug", "org_root_id", "created_at")
    search_fields = ("name", "slug", "org_root_id")
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


class _ReadOnly(admin.ModelAdmin):
    """Gate records change only through their services (admin actions call them)."""

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


def _may_operate_gate(request) -> bool:
    return Role.PLATFORM_OPERATOR in person_roles(request.user)


@admin.register(OperatorKey)
class OperatorKeyAdmin(_ReadOnly):
    """Operator keys are created with ``manage.py create_operator_key`` (the key is printed
    once); here they are listed and revoked."""

    list_display = ("name", "key_prefix", "jkt", "organization", "created_at", "created_by", "revoked_at")
    list_filter = ("organization",)
    search_fields = ("name", "key_prefix", "jkt")
    fields = ("name", "organization", "key_prefix", "jkt", "created_at", "created_by", "revoked_at")
    readonly_fields = fields
    actions = ["revoke"]

    @admin.action(description="Revoke selected operator keys")
    def revoke(self, request, queryset):
        if not _may_operate_gate(request):
            self.message_user(request, "Only platform operators may revoke operator keys.", messages.ERROR)
            return
        for key in queryset.filter(revoked_at__isnull=True):
            revoke_operator_key(key, by=request.user.get_username())
        self.message_user(request, "Revoked.", messages.SUCCESS)


@admin.register(GateState)
class GateStateAdmin(_ReadOnly):
    list_display = (
        "epoch",
        "epoch_advanced_at",
        "epoch_advanced_by",
        "draining",
        "drain_started_at",
        "drain_started_by",
    )
    fields = list_display
    readonly_fields = fields
    actions = ["drain", "resume", "revoke_all"]

    def _operate(self, request, change) -> None:
        if not _may_operate_gate(request):
            self.message_user(request, "Only platform operators may change the gate's state.", messages.ERROR)
            return
        self.message_user(request, change(request.user.get_username()), messages.SUCCESS)

    @admin.action(description="Drain: refuse new leases and action calls in every process")
    def drain(self, request, queryset):
        self._operate(request, lambda by: "Already draining." if start_drain(by)[0] else "Draining.")

    @admin.action(description="End the drain")
    def resume(self, request, queryset):
        self._operate(request, lambda by: "Drain ended." if end_drain(by)[0] else "The gate was not draining.")

    @admin.action(description="Revoke all: advance the epoch (every outstanding lease stops working)")
    def revoke_all(self, request, queryset):
        self._operate(request, lambda by: "Epoch {} → {}.".format(*advance_epoch(by)))


@admin.register(GateLease)
class GateLeaseAdmin(_ReadOnly):
    list_display = ("lease_jti", "agent_id", "identity", "epoch", "issued_at", "expires_at")
    list_filter = ("epoch",)
    search_fields = ("lease_jti", "session_id", "agent_id", "identity", "jkt")
    date_hierarchy = "issued_at"


@admin.register(WalletSession)
class WalletSessionAdmin(_ReadOnly):
    """Wallet sessions open by Sign-In with Ethereum (docs/wallets.md); here they are listed
    and revoked. Only a hash of each secret is stored: nothing here can show one."""

    list_display = ("wallet", "prefix", "status", "chain_id", "contract_wallet", "created_at", "expires_at")
    list_filter = ("status", "chain_id", "contract_wallet")
    search_fields = ("wallet", "prefix")
    fields = (
        "wallet",
        "prefix",
        "status",
        "chain_id",
        "domain",
        "contract_wallet",
        "created_at",
        "expires_at",
        "revoked_at",
    )
    readonly_fields = fields
    actions = ["revoke"]

    @admin.action(description="Revoke selected wallet sessions")
    def revoke(self, request, queryset):
        if not request.user.has_perm("governance.change_walletsession"):
            self.message_user(request, "You may not revoke wallet sessions.", messages.ERROR)
            return
        sessions = list(queryset.filter(status=TokenStatus.ACTIVE))
        for session in sessions:
            revoke_wallet_session(session)
        self.message_user(request, f"Revoked {len(sessions)} wallet session(s).", messages.SUCCESS)


@admin.register(SiweNonce)
class SiweNonceAdmin(_ReadOnly):
    """Nonces handed out for Sign-In with Ethereum: only their hash is kept."""

    list_display = ("nonce_hash", "created_at", "expires_at", "used_at")
    fields = list_display
    readonly_fields = fields


# The installer's pages (principals, devices, install tokens, runtime packages, signer keys,
# offline renewal bundles) and the wallets linked to console accounts.
from governance import admin_installs, admin_renewals, admin_wallets  # noqa: E402, F401
