from django.contrib import admin, messages
from django.contrib.admin.views.main import ChangeList
from django.utils.html import format_html

from evidence.models import AuditEvent, SigningKey
from evidence.performers import PerformerNames
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
    list_display = ("ledger_seq", "chain_id", "sequence_no", "event_type", "performer", "occurred_at")
    list_filter = ("event_type", "performer_type")
    search_fields = ("chain_id", "event_type", "performer_id")
    ordering = ("-ledger_seq",)

    def get_changelist(self, request, **kwargs):
        return _NamedPerformers

    @admin.display(description="Performer", ordering="performer_id")
    def performer(self, obj):
        name = getattr(obj, "performer_name", None) or f"{obj.performer_type} · {obj.performer_id}"
        return format_html('<span title="{} · {}">{}</span>', obj.performer_type, obj.performer_id, name)


class _NamedPerformers(ChangeList):
    """The page's performers by name: one query per performer type for the whole page."""

    def get_results(self, request):
        super().get_results(request)
        names = PerformerNames.of(None, [(e.performer_type, e.performer_id) for e in self.result_list])
        for event in self.result_list:
            event.performer_name = names.label(event.performer_type, event.performer_id)


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
