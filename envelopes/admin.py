"""Envelopes in the console: the inbox on the admin index, a read-only envelope list, and the
review page (``/admin/envelopes/envelope/<id>/review/``) where a person decides one.

Envelopes change only through services (evaluation, review), so nothing here adds, edits or
deletes a row. Pages open to people holding a reader or reviewer role
(``admin_views.INBOX_ROLES``) and show their own organization's envelopes (superusers see
every organization's).
"""

from django.contrib import admin
from django.shortcuts import redirect
from django.urls import path
from django.utils.html import format_html

from envelopes.inbox import views as admin_views
from envelopes.models import Envelope
from evidence.admin import ReadOnlyAdmin


@admin.register(Envelope)
class EnvelopeAdmin(ReadOnlyAdmin):
    list_display = (
        "short_id",
        "created_at",
        "state_badge",
        "outcome",
        "reason_code",
        "agent_id",
        "surface_id",
        "review_decision",
        "reviewer_id",
    )
    list_filter = ("state", "outcome", "reason_code", "agent_id", "surface_id")
    search_fields = ("id", "request_id")
    date_hierarchy = "created_at"
    ordering = ("-created_at", "-id")
    list_per_page = 50
    actions = None

    # --- who sees what ---

    def has_module_permission(self, request):
        return admin_views.may_open_inbox(request)

    def has_view_permission(self, request, obj=None):
        return admin_views.may_open_inbox(request)

    def get_queryset(self, request):
        queryset = super().get_queryset(request)
        if request.user.is_superuser:
            return queryset
        organization = admin_views.console_organization(request)
        return queryset.filter(organization=organization) if organization else queryset.none()

    def get_list_display(self, request):
        columns = tuple(super().get_list_display(request))
        return columns + ("organization",) if request.user.is_superuser else columns

    def get_list_filter(self, request):
        filters = tuple(super().get_list_filter(request))
        return filters + ("organization",) if request.user.is_superuser else filters

    # --- pages ---

    def get_urls(self):
        review = path(
            "<path:object_id>/review/",
            self.admin_site.admin_view(self.review_view),
            name="envelopes_envelope_review",
        )
        return [review, *super().get_urls()]

    def review_view(self, request, object_id):
        return admin_views.review_page(self, request, object_id)

    def change_view(self, request, object_id, form_url="", extra_context=None):
        # The review page is the envelope's page: it shows every section and the chain.
        return redirect("admin:envelopes_envelope_review", object_id)

    # --- columns ---

    @admin.display(description="Envelope", ordering="id")
    def short_id(self, obj):
        return format_html('<code title="{}">{}</code>', obj.id, str(obj.id)[:8])

    @admin.display(description="State", ordering="state")
    def state_badge(self, obj):
        return format_html('<span class="inbox-pill inbox-state-{}">{}</span>', obj.state, obj.get_state_display())

    class Media:
        css = {"all": ["mandate/inbox.css"]}


_index = admin.site.index


def index_with_inbox(request, extra_context=None):
    """The admin index with the inbox of envelopes waiting for a person."""
    context = {"title": "Inbox", **admin_views.inbox_context(request), **(extra_context or {})}
    return _index(request, extra_context=context)


admin.site.index = index_with_inbox

import envelopes.inbox.requests_admin  # noqa: E402,F401  (channels, invites, requests, the request page)
from envelopes.delivery import admin as admin_deliveries  # noqa: E402,F401  (registers /admin/webhooks)
