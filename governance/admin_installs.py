"""The installer's console pages (docs/installs.md): an organization's principals and their
wallets, its devices and install tokens; the platform's runtime packages and external signer
keys. Packages and signer keys are added through their services (which sign and verify);
devices and tokens change only through the installer's API."""

from functools import partial

from django import forms
from django.contrib import admin, messages
from django.urls import reverse
from django.utils.html import format_html

from governance.choices import PackageStatus, Role
from governance.console import OrganizationScopedAdmin, console_organization, has_any_role
from governance.errors import DomainError
from governance.models import Device, InstallToken, Principal, PrincipalWallet, RuntimePackage, SignerKey
from governance.services.install_rules import device_chain_id
from governance.services.runtime_packages import register_package, register_signer_key, withdraw_package


class PrincipalWalletInline(admin.TabularInline):
    """Shown to those who may change the principal (``PrincipalAdmin.get_inlines``)."""

    model = PrincipalWallet
    extra = 1
    fields = ("address", "purpose", "created_at")
    readonly_fields = ("created_at",)

    def has_view_permission(self, request, obj=None):
        return True

    has_add_permission = has_change_permission = has_delete_permission = has_view_permission


class _OrganizationWrites:
    """Platform operators and admins add and change their organization's rows here."""

    def has_add_permission(self, request, obj=None):
        return self.may_apply(request)

    def has_change_permission(self, request, obj=None):
        return self.may_apply(request)


@admin.register(Principal)
class PrincipalAdmin(_OrganizationWrites, OrganizationScopedAdmin):
    list_display = ("principal_id", "display_name", "organization", "role", "membership_status", "assurance")
    list_filter = ("role", "membership_status", "identity_assurance_level")
    search_fields = ("principal_id", "display_name", "wallets__address")
    fields = (
        "principal_id",
        "display_name",
        "person",
        "role",
        "membership_status",
        "identity_assurance_level",
        "created_at",
        "updated_at",
    )
    readonly_fields = ("created_at", "updated_at")
    autocomplete_fields = ("person",)
    inlines = [PrincipalWalletInline]

    def get_inlines(self, request, obj):
        return self.inlines if self.may_apply(request) else []

    @admin.display(description="Identity assurance", ordering="identity_assurance_level")
    def assurance(self, obj):
        return obj.get_identity_assurance_level_display()

    def save_model(self, request, obj, form, change):
        if not change:
            obj.organization = console_organization(request)
        super().save_model(request, obj, form, change)


@admin.register(Device)
class DeviceAdmin(OrganizationScopedAdmin):
    list_display = (
        "device_id",
        "principal",
        "wallet",
        "platform",
        "runtime_version",
        "install_state",
        "availability_state",
        "access_class",
        "lease_expires_at",
        "last_heartbeat_at",
    )
    list_filter = ("install_state", "availability_state", "access_class", "platform", "rollout_channel")
    search_fields = ("device_id", "wallet", "principal__principal_id")
    fields = (
        "device_id",
        "wallet",
        "principal",
        "platform",
        "rollout_channel",
        "launcher_version",
        "runtime_version",
        "policy_hash",
        "entitlement_id",
        "install_state",
        "availability_state",
        "access_class",
        "lease_expires_at",
        "last_heartbeat_at",
        "activated_at",
        "launcher_receipt_hash",
        "evidence",
    )
    readonly_fields = fields

    @admin.display(description="Evidence")
    def evidence(self, obj):
        chain = device_chain_id(obj)
        url = reverse("admin:evidence_auditevent_changelist") + f"?q={chain}"
        return format_html('<a href="{}">The device\'s hash chain ({})</a>', url, chain)


@admin.register(InstallToken)
class InstallTokenAdmin(OrganizationScopedAdmin):
    """Only each token's hash is kept: nothing here can show one."""

    list_display = ("device", "wallet", "principal", "package", "created_at", "expires_at", "used_at")
    list_filter = ("package__platform",)
    search_fields = ("wallet", "device__device_id")
    fields = (
        "device",
        "wallet",
        "principal",
        "entitlement_id",
        "package",
        "launcher_version",
        "current_runtime_version",
        "created_at",
        "expires_at",
        "used_at",
        "installed_at",
        "launcher_receipt_hash",
    )
    readonly_fields = fields


class _PlatformAdmins(admin.ModelAdmin):
    """Runtime packages and signer keys serve every organization: platform admins keep them."""

    def _may(self, request) -> bool:
        user = request.user
        return user.is_active and user.is_staff and (user.is_superuser or has_any_role(request, {Role.PLATFORM_ADMIN}))

    def has_module_permission(self, request):
        return self._may(request)

    def has_view_permission(self, request, obj=None):
        return self._may(request)

    def has_add_permission(self, request):
        return self._may(request)

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


class RuntimePackageForm(forms.ModelForm):
    signature = forms.CharField(
        required=False,
        max_length=140,
        help_text="Leave empty for Mandate to sign with its own key; or paste an external signer's "
        "ed25519:<hex> over the canonical descriptor (docs/installs.md).",
    )
    signer_key_id = forms.CharField(
        required=False, max_length=80, help_text="The registered external signer key, when a signature is pasted."
    )

    class Meta:
        model = RuntimePackage
        fields = ("platform", "rollout_channel", "runtime_version", "package_url", "package_hash", "policy_hash")
        field_classes = {"package_url": partial(forms.URLField, assume_scheme="https")}

    def clean(self):
        cleaned = super().clean()
        if self.errors:
            return cleaned
        try:
            self.instance = register_package(
                platform=cleaned["platform"],
                rollout_channel=cleaned["rollout_channel"],
                runtime_version=cleaned["runtime_version"],
                package_url=cleaned["package_url"],
                package_hash=cleaned["package_hash"],
                policy_hash=cleaned["policy_hash"],
                signature=cleaned.get("signature", ""),
                signer_key_id=cleaned.get("signer_key_id", ""),
                created_by=self.created_by,
            )
        except DomainError as exc:
            field = getattr(exc, "field", None)
            self.add_error(field if field in self.fields else None, str(exc))
        return cleaned


@admin.register(RuntimePackage)
class RuntimePackageAdmin(_PlatformAdmins):
    form = RuntimePackageForm
    list_display = ("runtime_version", "platform", "rollout_channel", "status", "signer_key_id", "created_at")
    list_filter = ("platform", "rollout_channel", "status")
    search_fields = ("runtime_version", "package_hash", "signer_key_id")
    readonly_fields = (
        "platform",
        "rollout_channel",
        "runtime_version",
        "package_url",
        "package_hash",
        "policy_hash",
        "signature",
        "signer_key_id",
        "status",
        "created_by",
        "created_at",
    )
    actions = ["withdraw"]

    def get_readonly_fields(self, request, obj=None):
        return self.readonly_fields if obj is not None else ()

    def get_fields(self, request, obj=None):
        if obj is not None:
            return self.readonly_fields
        return (*RuntimePackageForm.Meta.fields, "signature", "signer_key_id")

    def get_form(self, request, obj=None, change=False, **kwargs):
        form = super().get_form(request, obj, change=change, **kwargs)
        form.created_by = request.user.get_username()
        return form

    def save_model(self, request, obj, form, change):
        """The service saved the package while the form was validated (it signs it)."""

    def has_change_permission(self, request, obj=None):
        return obj is None and self._may(request)

    @admin.action(description="Withdraw selected packages (no longer offered; unconfirmed tokens fail)")
    def withdraw(self, request, queryset):
        if not self._may(request):
            self.message_user(request, "Only platform admins may withdraw packages.", messages.ERROR)
            return
        packages = list(queryset.filter(status=PackageStatus.ACTIVE))
        for package in packages:
            withdraw_package(package)
        self.message_user(request, f"Withdrew {len(packages)} package(s).", messages.SUCCESS)


class SignerKeyForm(forms.ModelForm):
    class Meta:
        model = SignerKey
        fields = ("key_id", "public_key", "description")

    def clean(self):
        cleaned = super().clean()
        if self.errors:
            return cleaned
        try:
            self.instance = register_signer_key(
                cleaned["key_id"], cleaned["public_key"], cleaned.get("description", "")
            )
        except DomainError as exc:
            field = getattr(exc, "field", None)
            self.add_error(field if field in self.fields else None, str(exc))
        return cleaned

    def validate_unique(self):
        """The service refuses a key id already registered (Conflict, shown on the form)."""


@admin.register(SignerKey)
class SignerKeyAdmin(_PlatformAdmins):
    form = SignerKeyForm
    list_display = ("key_id", "status", "description", "created_at")
    list_filter = ("status",)
    search_fields = ("key_id",)

    def get_readonly_fields(self, request, obj=None):
        return ("key_id", "public_key", "status", "description", "created_at") if obj is not None else ()

    def has_change_permission(self, request, obj=None):
        return obj is None and self._may(request)

    def save_model(self, request, obj, form, change):
        """The service saved the key while the form was validated."""
