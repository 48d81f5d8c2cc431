"""The inbox in the console: the admin index replaced by the inbox, a read-only envelope list
whose page is the review page, and read-only pages for agents' channels, invites and requests
(a request's page is the request page) and held actions (a held action's page is the
held-action page).

Nothing here writes a row: envelopes change through services only. Keys are rotated and
channels revoked on the Agents page (``/agents``). Envelope pages open to inbox readers
(``permissions.INBOX_ROLES``); channel pages to anyone on staff in an organization, scoped to
what they may see. Superusers see every organization's rows.
"""

from django.contrib import admin
from django.shortcuts import redirect
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html

from envelopes.choices import EnvelopeKind
from envelopes.inbox.action_page import action_page
from envelopes.inbox.cards import card_url
from envelopes.inbox.console import viewer_of
from envelopes.inbox.labels import (
    GATE_STATE_LABELS,
    KIND_LABELS,
    STATUS_LABELS,
    TYPE_LABELS,
    action_title,
    hold_reason_text,
    reason_title,
)
from envelopes.inbox.permissions import may_open_inbox, may_use_console
from envelopes.inbox.request_page import request_page
from envelopes.inbox.views import acknowledge_many, inbox_context, live_events, live_state, review_page
from envelopes.models import ApprovalRequest, Channel, ChannelInvite, Envelope, GateApproval
from evidence.admin import ReadOnlyAdmin
from governance.choices import Role


class InboxReaderAdmin(ReadOnlyAdmin):
    """Open to inbox readers (``permissions.INBOX_ROLES``), scoped to their organization through
    ``organization_field`` (every organization's rows for superusers)."""

    organization_field = "organization"

    def has_module_permission(self, request):
        return may_open_inbox(viewer_of(request))

    def has_view_permission(self, request, obj=None):
        return may_open_inbox(viewer_of(request))

    def get_queryset(self, request):
        queryset = super().get_queryset(request)
        if request.user.is_superuser:
            return queryset
        organization = viewer_of(request).organization
        return queryset.filter(**{self.organization_field: organization}) if organization else queryset.none()


@admin.register(Envelope)
class EnvelopeAdmin(InboxReaderAdmin):
    # Five columns that fit a 1,366 px screen beside the navigation and the filters; an agent's
    # request fills "what" and "result" with its own title, channel, status and type.
    list_display = ("short_id", "created_at", "state_badge", "subject", "result")
    list_select_related = ("approval_request__channel", "gate_approval")
    list_filter = ("state", "outcome", "reason_code", "agent_id", "surface_id")
    search_fields = ("id", "request_id")
    date_hierarchy = "created_at"
    ordering = ("-created_at", "-id")
    list_per_page = 50
    actions = None

    def get_list_display(self, request):
        columns = tuple(super().get_list_display(request))
        return columns + ("organization",) if request.user.is_superuser else columns

    def get_list_filter(self, request):
        filters = tuple(super().get_list_filter(request))
        return filters + ("organization",) if request.user.is_superuser else filters

    # --- pages ---

    def get_urls(self):
        wrap = self.admin_site.admin_view
        return [
            path("<path:object_id>/review/", wrap(self.review_view), name="envelopes_envelope_review"),
            path("<path:object_id>/action/", wrap(self.action_view), name="envelopes_envelope_action"),
            *super().get_urls(),
        ]

    def review_view(self, request, object_id):
        return review_page(self, request, object_id)

    def action_view(self, request, object_id):
        return action_page(self, request, object_id)

    def change_view(self, request, object_id, form_url="", extra_context=None):
        # The review page is the envelope's page: it shows every section and the chain (and
        # sends an agent's request or a held action on to its own page).
        return redirect("admin:envelopes_envelope_review", object_id)

    # --- columns ---

    @admin.display(description="Envelope", ordering="id")
    def short_id(self, obj):
        return format_html('<code title="{}">{}</code>', obj.id, str(obj.id)[:8])

    @admin.display(description="State", ordering="state")
    def state_badge(self, obj):
        return format_html('<span class="inbox-pill inbox-state-{}">{}</span>', obj.state, obj.get_state_display())

    @admin.display(description="What", ordering="kind")
    def subject(self, obj):
        kind = KIND_LABELS.get(obj.kind, obj.kind)
        held = _held_action_of(obj)
        if held is not None:
            return format_html(
                '<span class="inbox-detail">{}</span><br>{}<br><span class="inbox-detail">by <code>{}</code></span>',
                kind,
                action_title(held.action_id, held.action_version),
                held.agent_id or "—",
            )
        request = _request_of(obj)
        if request is not None:
            return format_html(
                '<span class="inbox-detail">{}</span><br>{}<br><span class="inbox-detail">via {}</span>',
                kind,
                request.title,
                request.channel.name,
            )
        return format_html(
            '<span class="inbox-detail">{}</span><br><code>{}</code><br>'
            '<span class="inbox-detail">on <code>{}</code></span>',
            kind,
            obj.agent_id or "—",
            obj.surface_id or "—",
        )

    @admin.display(description="Result")
    def result(self, obj):
        held = _held_action_of(obj)
        if held is not None:
            return format_html(
                '{}<br><span class="inbox-detail">{}</span>',
                GATE_STATE_LABELS.get(held.state, held.state),
                hold_reason_text(held.hold_reason),
            )
        request = _request_of(obj)
        if request is not None:
            status = STATUS_LABELS.get(request.status, request.status)
            kind = TYPE_LABELS.get(request.type, request.type)
            return format_html('{}<br><span class="inbox-detail">{}</span>', status, kind)
        if not obj.outcome:
            return "—"
        reason = reason_title(obj.reason_code) if obj.reason_code else ""
        review = f"reviewed: {obj.review_decision.lower()}" if obj.review_decision else ""
        detail = " · ".join(part for part in (reason, review) if part)
        return format_html(
            '{}<br><span class="inbox-detail" title="{}">{}</span>', obj.get_outcome_display(), obj.reason_code, detail
        )

    class Media:
        css = {"all": ["mandate/inbox.css"]}


def _request_of(envelope: Envelope) -> ApprovalRequest | None:
    if envelope.kind != EnvelopeKind.APPROVAL_REQUEST:
        return None
    try:
        return envelope.approval_request
    except ApprovalRequest.DoesNotExist:
        return None


def _held_action_of(envelope: Envelope) -> GateApproval | None:
    if envelope.kind != EnvelopeKind.ACTION:
        return None
    try:
        return envelope.gate_approval
    except GateApproval.DoesNotExist:
        return None


def _scoped(request, queryset, owner_field: str, organization_field: str):
    """The organization's rows for platform admins (every organization's for superusers), the
    person's own otherwise."""
    user = request.user
    if user.is_superuser:
        return queryset
    viewer = viewer_of(request)
    if viewer.organization is None:
        return queryset.none()
    queryset = queryset.filter(**{organization_field: viewer.organization})
    if Role.PLATFORM_ADMIN in viewer.roles:
        return queryset
    return queryset.filter(**{owner_field: user})


class ConsoleReadOnlyAdmin(ReadOnlyAdmin):
    """Open to anyone on staff in an organization; each admin's ``scope`` picks the rows."""

    owner_field = "owner"
    organization_field = "organization"

    def has_module_permission(self, request):
        return may_use_console(viewer_of(request))

    def has_view_permission(self, request, obj=None):
        return may_use_console(viewer_of(request))

    def scope(self, request, queryset):
        return _scoped(request, queryset, self.owner_field, self.organization_field)

    def get_queryset(self, request):
        return self.scope(request, super().get_queryset(request))


@admin.register(Channel)
class ChannelAdmin(ConsoleReadOnlyAdmin):
    list_display = ("name", "owner", "agent", "status_pill", "webhook", "created_at", "key_rotated_at", "channel_id")
    list_filter = ("status", "webhook_disabled")
    search_fields = ("name", "key_prefix", "=id")
    list_select_related = ("owner", "agent")
    ordering = ("name",)
    fields = (
        "id",
        "name",
        "owner",
        "agent",
        "status",
        "webhook_disabled",
        "key_prefix",
        "created_at",
        "key_rotated_at",
        "manage",
    )
    readonly_fields = ("manage",)

    @admin.display(description="Channel id")
    def channel_id(self, obj):
        return format_html("<code>{}</code>", obj.id)

    @admin.display(description="Status", ordering="status")
    def status_pill(self, obj):
        return format_html('<span class="inbox-pill inbox-channel-{}">{}</span>', obj.status, obj.get_status_display())

    @admin.display(description="Webhook", ordering="webhook_disabled")
    def webhook(self, obj):
        return "disabled (410 Gone)" if obj.webhook_disabled else "on"

    @admin.display(description="Manage")
    def manage(self, obj):
        return format_html(
            'Rotate the key or revoke the channel on the <a href="{}">Agents page</a>. <a href="{}">Its requests</a>.',
            reverse("agents"),
            reverse("admin:envelopes_approvalrequest_changelist") + f"?channel__id__exact={obj.pk}",
        )

    class Media:
        css = {"all": ["mandate/inbox.css"]}


@admin.register(ChannelInvite)
class ChannelInviteAdmin(ConsoleReadOnlyAdmin):
    list_display = ("owner", "created_at", "expires_at", "state", "channel")
    list_filter = ("used_at",)
    list_select_related = ("owner", "channel")
    ordering = ("-created_at",)
    fields = ("id", "owner", "created_at", "expires_at", "used_at", "channel", "state")
    readonly_fields = ("state",)

    @admin.display(description="State")
    def state(self, obj):
        if obj.used_at:
            return "used"
        return "expired" if obj.expires_at <= timezone.now() else "open"


@admin.register(ApprovalRequest)
class ApprovalRequestAdmin(ConsoleReadOnlyAdmin):
    """Agents' requests: a read-only list, and each request's page (its change page)."""

    list_display = ("title", "type", "status_pill", "risk_level", "route", "channel", "received")
    list_filter = ("status", "type", "risk_level", "route", "channel")
    search_fields = ("title", "=envelope__id")
    list_select_related = ("channel", "envelope")
    ordering = ("-envelope__created_at",)
    actions = None

    def scope(self, request, queryset):
        """Inbox readers see the organization's requests; anyone else their own agents'."""
        viewer = viewer_of(request)
        if request.user.is_superuser:
            return queryset
        if viewer.organization is None:
            return queryset.none()
        queryset = queryset.filter(channel__organization=viewer.organization)
        return queryset if viewer.reads_all else queryset.filter(channel__owner=request.user)

    def get_urls(self):
        wrap = self.admin_site.admin_view
        return [
            path("live/", wrap(live_state), name="envelopes_inbox_live"),
            path("live/events/", wrap(live_events), name="envelopes_inbox_events"),
            path("acknowledge/", wrap(acknowledge_many), name="envelopes_inbox_acknowledge"),
            *super().get_urls(),
        ]

    def change_view(self, request, object_id, form_url="", extra_context=None):
        return request_page(self, request, object_id)

    @admin.display(description="Status", ordering="status")
    def status_pill(self, obj):
        return format_html('<span class="inbox-pill inbox-status-{}">{}</span>', obj.status, obj.get_status_display())

    @admin.display(description="Received", ordering="envelope__created_at")
    def received(self, obj):
        return obj.envelope.created_at

    class Media:
        css = {"all": ["mandate/inbox.css"]}


@admin.register(GateApproval)
class GateApprovalAdmin(InboxReaderAdmin):
    """Held actions (the gate's approvals), kept after they are decided: a read-only list for
    inbox readers of the organization; each row opens the held-action page."""

    list_display = ("approval", "action", "agent_id", "state_pill", "risk_pill", "created_at", "decided_by")
    list_filter = ("state", "risk_level", "action_id")
    search_fields = ("=approval_id", "=trace_id", "action_id", "agent_id", "=session_id")
    list_select_related = ("envelope",)
    ordering = ("-created_at",)
    date_hierarchy = "created_at"
    list_per_page = 50
    actions = None
    organization_field = "envelope__organization"

    def change_view(self, request, object_id, form_url="", extra_context=None):
        # The held-action page is its page: the plan, the evidence and the decision.
        return redirect("admin:envelopes_envelope_action", object_id)

    @admin.display(description="Approval", ordering="approval_id")
    def approval(self, obj):
        return format_html('<a href="{}"><code>{}</code></a>', card_url(obj.envelope), obj.approval_id)

    @admin.display(description="Action", ordering="action_id")
    def action(self, obj):
        return format_html("<code>{}</code> {}", obj.action_id, obj.action_version)

    @admin.display(description="State", ordering="state")
    def state_pill(self, obj):
        label = GATE_STATE_LABELS.get(obj.state, obj.state)
        return format_html('<span class="inbox-pill inbox-gate-{}">{}</span>', obj.state, label)

    @admin.display(description="Risk", ordering="risk_level")
    def risk_pill(self, obj):
        return format_html(
            '<span class="inbox-pill inbox-risk inbox-risk-{}">{}</span>', obj.risk_level, obj.risk_level
        )

    class Media:
        css = {"all": ["mandate/inbox.css"]}


_index = admin.site.index


def index_with_inbox(request, extra_context=None):
    """The admin index with the inbox of envelopes waiting for a person."""
    context = {"title": "Inbox", **inbox_context(request), **(extra_context or {})}
    return _index(request, extra_context=context)


admin.site.index = index_with_inbox
