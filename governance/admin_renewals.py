"""The console's offline renewal bundles (docs/renewals.md): org admins and operators make one
for a principal's ownership wallet (through the service the API uses) and copy its signed
payload; everyone with a console role lists them. A bundle is never edited or deleted."""

from datetime import UTC

from django import forms
from django.conf import settings
from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.template.response import TemplateResponse
from django.utils import timezone
from django.utils.html import format_html

from governance.choices import WalletPurpose
from governance.console import OrganizationScopedAdmin, console_organization
from governance.models import Principal, PrincipalWallet, RenewalBundle
from governance.services.install_rules import InstallRefused
from governance.services.renewals import Issuer, create_renewal_bundle, renewal_horizon

MOMENT_INPUT = forms.DateTimeInput(attrs={"type": "datetime-local"}, format="%Y-%m-%dT%H:%M")


class RenewalBundleForm(forms.Form):
    """What ``POST /governance/renewal-bundles`` takes, with the organization's principals and
    ownership wallets to pick from. Times are UTC."""

    principal = forms.ModelChoiceField(queryset=Principal.objects.none())
    wallet = forms.ChoiceField(help_text="One of the principal's ownership wallets.")
    renewed_until = forms.DateTimeField(widget=MOMENT_INPUT, label="Renewed until (UTC)")
    valid_until = forms.DateTimeField(
        widget=MOMENT_INPUT,
        required=False,
        label="Valid until (UTC)",
        help_text="Apply before this; empty: until the renewal ends.",
    )

    def __init__(self, organization, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["principal"].queryset = Principal.objects.filter(organization=organization)
        wallets = (
            PrincipalWallet.objects.filter(principal__organization=organization, purpose=WalletPurpose.OWNERSHIP)
            .select_related("principal")
            .order_by("principal__principal_id", "address")
        )
        self.fields["wallet"].choices = [("", "---------")] + [
            (wallet.address, f"{wallet.address} ({wallet.principal.principal_id})") for wallet in wallets
        ]
        days, horizon = settings.MANDATE_RENEWAL_MAX_DAYS, renewal_horizon(timezone.now())
        self.fields["renewed_until"].help_text = f"At most {days} days ahead (before {horizon:%Y-%m-%d %H:%M} UTC)."


class AppliedFilter(admin.SimpleListFilter):
    title = "applied"
    parameter_name = "applied"

    def lookups(self, request, model_admin):
        return [("yes", "Applied"), ("no", "Not applied")]

    def queryset(self, request, queryset):
        if self.value() == "yes":
            return queryset.filter(applied_at__isnull=False)
        if self.value() == "no":
            return queryset.filter(applied_at__isnull=True)
        return queryset


def _utc(moment):
    return moment if moment is None or moment.tzinfo else moment.replace(tzinfo=UTC)


@admin.register(RenewalBundle)
class RenewalBundleAdmin(OrganizationScopedAdmin):
    list_display = ("bundle_id", "principal", "wallet", "renewed_until", "valid_until", "applied_at", "created_by")
    list_filter = (AppliedFilter,)
    search_fields = ("bundle_id", "wallet", "principal__principal_id")
    list_select_related = ("principal",)
    date_hierarchy = "created_at"
    fields = (
        "bundle_id",
        "organization",
        "principal",
        "wallet",
        "renewed_until",
        "valid_until",
        "applied_at",
        "signing_key_id",
        "created_by",
        "created_at",
        "signed_payload_to_copy",
    )
    readonly_fields = fields

    @admin.display(description="Signed payload")
    def signed_payload_to_copy(self, obj):
        return format_html(
            '<code id="renewal-signed-payload" style="user-select:all;word-break:break-all">{}</code>',
            obj.signed_payload,
        )

    def has_add_permission(self, request):
        return self.may_apply(request)

    def add_view(self, request, form_url="", extra_context=None):
        """Create through the service (``POST /governance/renewal-bundles`` uses it too), then
        show what to hand to the launcher."""
        if not self.has_add_permission(request):
            raise PermissionDenied
        organization = console_organization(request)
        form = RenewalBundleForm(organization, request.POST or None)
        if request.method == "POST" and form.is_valid():
            data = form.cleaned_data
            try:
                bundle = create_renewal_bundle(
                    data["principal"],
                    data["wallet"],
                    _utc(data["renewed_until"]),
                    _utc(data["valid_until"]),
                    created_by=Issuer.of_person(request.user),
                )
            except InstallRefused as exc:
                form.add_error(None, exc.message)
            else:
                return TemplateResponse(
                    request,
                    "admin/governance/renewalbundle/created.html",
                    {**self.admin_site.each_context(request), "opts": self.model._meta, "bundle": bundle,
                     "title": "Renewal bundle created"},
                )  # fmt: skip
        return TemplateResponse(
            request,
            "admin/governance/renewalbundle/add.html",
            {
                **self.admin_site.each_context(request),
                "opts": self.model._meta,
                "form": form,
                "organization": organization,
                "title": "New renewal bundle",
            },
        )
