"""Wallets linked to console accounts, in the admin: listed, searched and unlinked (each
unlink audited by ``wallet_login.unlink_wallet``). Nothing is added here: a link needs the
wallet's own signature, so people link their wallets on ``/accounts/wallet/``."""

from django.contrib import admin, messages

from governance.api.request_meta import client_ip_of, request_id_of
from governance.models import AccountWallet
from governance.services.wallet_login import unlink_wallet


@admin.register(AccountWallet)
class AccountWalletAdmin(admin.ModelAdmin):
    list_display = ("address", "person", "linked_at")
    list_select_related = ("person",)
    search_fields = ("address", "person__username", "person__email")
    fields = ("address", "person", "linked_at")
    readonly_fields = fields
    actions = ["unlink"]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False  # the "Unlink" action audits; a bare delete would not

    @admin.action(description="Unlink selected wallets")
    def unlink(self, request, queryset):
        if not request.user.has_perm("governance.delete_accountwallet"):
            self.message_user(request, "You may not unlink wallets.", messages.ERROR)
            return
        links = list(queryset.select_related("person"))
        for link in links:
            unlink_wallet(
                link.person,
                link.address,
                by=request.user,
                request_id=request_id_of(request),
                client_ip=client_ip_of(request),
            )
        self.message_user(request, f"Unlinked {len(links)} wallet(s).", messages.SUCCESS)
