from django.contrib import admin, messages

from evidence.models import AuditEvent, SigningKey
from evidence.services.keys import rotate_key


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(AuditEvent)
class AuditEventAdmin(ReadOnlyAdmin):
    list_display = (
        "ledger_seq",
        "chain_id",
        "sequence_no",
        "event_type",
        "performer_type",
        "performer_id",
        "occurred_at",
    )
    list_filter = ("event_type", "performer_type")
    search_fields = ("chain_id", "event_type", "performer_id")
    ordering = ("-ledger_seq",)


@admin.register(SigningKey)
class SigningKeyAdmin(ReadOnlyAdmin):
    list_display = ("kid", "algorithm", "status", "created_at", "retired_at")
    list_filter = ("algorithm", "status")
    fields = ("kid", "algorithm", "status", "public_jwk", "created_at", "retired_at")
    readonly_fields = fields
    actions = ["rotate"]

    @admin.action(description="Rotate: retire the selected algorithms' active keys and create new ones")
    def rotate(self, request, queryset):
        if not request.user.is_superuser:
            self.message_user(request, "Only superusers may rotate signing keys.", messages.ERROR)
            return
        for algorithm in sorted(set(queryset.values_list("algorithm", flat=True))):
            key = rotate_key(algorithm)
            self.message_user(request, f"New active {algorithm} key: {key.kid}")
