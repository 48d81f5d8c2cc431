"""Webhook deliveries in the console (``/admin/webhooks``): what was sent where, how the
receiver answered, when the next attempt is, and a Replay action. Platform admins only;
replaying is ``envelopes.delivery.webhooks.replay``, the same function any other caller uses.
"""

from django.contrib import admin, messages
from django.template.defaultfilters import truncatechars
from django.utils.html import format_html

from envelopes.choices import DeliveryStatus
from envelopes.delivery import webhooks
from envelopes.models import Delivery
from evidence.admin import ReadOnlyAdmin
from evidence.services.audit_trails import record_admin_action
from governance.api.request_meta import client_ip_of, request_id_of
from governance.choices import Role
from governance.console import console_organization, console_roles

STATUS_PILLS = {
    DeliveryStatus.PENDING: "inbox-state-escalated",
    DeliveryStatus.DELIVERED: "inbox-state-closed",
    DeliveryStatus.FAILED: "inbox-risk-high",
    DeliveryStatus.DISABLED: "inbox-risk-high",
}


def may_manage_webhooks(request) -> bool:
    user = request.user
    if not (user.is_authenticated and user.is_active and user.is_staff):
        return False
    return user.is_superuser or (bool(user.organization_id) and Role.PLATFORM_ADMIN in console_roles(request))


@admin.register(Delivery)
class DeliveryAdmin(ReadOnlyAdmin):
    list_display = (
        "status_pill",
        "event",
        "channel",
        "url",
        "attempts",
        "last_status_code",
        "response_excerpt",
        "next_attempt",
        "created_at",
    )
    list_filter = ("status", "event", ("channel", admin.RelatedOnlyFieldListFilter))
    search_fields = ("id", "url", "request__envelope__id")
    list_select_related = ("channel",)
    ordering = ("-created_at",)
    date_hierarchy = "created_at"
    list_per_page = 50
    actions = ["replay"]
    readonly_fields = (
        "id",
        "status",
        "event",
        "channel",
        "request",
        "url",
        "attempts",
        "next_attempt_at",
        "last_attempt_at",
        "last_status_code",
        "last_response_excerpt",
        "last_error",
        "created_at",
        "delivered_at",
        "body",
    )
    fields = readonly_fields

    # --- who sees what ---

    def has_module_permission(self, request):
        return may_manage_webhooks(request)

    def has_view_permission(self, request, obj=None):
        return may_manage_webhooks(request)

    def get_queryset(self, request):
        queryset = super().get_queryset(request)
        if request.user.is_superuser:
            return queryset
        organization = console_organization(request)
        return queryset.filter(channel__organization=organization) if organization else queryset.none()

    # --- actions ---

    @admin.action(description="Replay the selected deliveries (send again from the first attempt)")
    def replay(self, request, queryset):
        who = request.user.get_username()
        replayed = webhooks.replay(queryset, replayed_by=who)
        organization = console_organization(request)
        record_admin_action(
            action="webhook.replayed",
            actor_type="user",
            actor_id=who,
            organization_id=organization.pk if organization else None,
            target_type="delivery",
            target_id=replayed[0] if len(replayed) == 1 else "",
            request_id=request_id_of(request),
            client_ip=client_ip_of(request),
            required_permission=Role.PLATFORM_ADMIN,
            details={"deliveries": replayed, "via": "admin"},
        )
        self.message_user(
            request, f"Replaying {len(replayed)} deliver{'y' if len(replayed) == 1 else 'ies'}.", messages.SUCCESS
        )

    # --- columns ---

    @admin.display(description="Status", ordering="status")
    def status_pill(self, obj):
        return format_html('<span class="inbox-pill {}">{}</span>', STATUS_PILLS.get(obj.status, ""), obj.status)

    @admin.display(description="Last response")
    def response_excerpt(self, obj):
        return truncatechars(obj.last_response_excerpt or obj.last_error, 80)

    @admin.display(description="Next attempt", ordering="next_attempt_at")
    def next_attempt(self, obj):
        return obj.next_attempt_at if obj.status == DeliveryStatus.PENDING else "—"

    class Media:
        css = {"all": ["mandate/inbox.css"]}
