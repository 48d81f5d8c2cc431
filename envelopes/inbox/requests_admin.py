"""Agents' channels in the console: read-only pages for channels, invites and approval
requests, and the request page (``/admin/envelopes/approvalrequest/<id>/change/``) where a
person acts on an agent's request.

Nothing here writes a row itself. Keys are rotated and channels revoked on the Agents page
(``/agents``, ``envelopes.requests.views``) through ``envelopes.requests.channels``; every action
on a request is ``envelopes.requests.decisions.act``, and ``refusal`` says which buttons are
enabled and why the others are not. Registered by one import at the bottom of
``envelopes/admin.py``.
"""

import json
from dataclasses import dataclass, field
from datetime import datetime

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html

from controlplane.admin_views import console_organization, console_roles
from envelopes.choices import RequestStatus, RequestType, Route, TweakStatus
from envelopes.inbox.views import (
    ROUTE_TEXTS,
    STATUS_LABELS,
    TYPE_LABELS,
    Declarations,
    Names,
    Viewer,
    acknowledge_many,
    chain_rows,
    clock_of,
    envelope_version,
    is_fyi,
    is_uuid,
    live_state,
    may_see_request,
    may_use_console,
    neighbours,
    person_label,
    primary_action,
    progress_line,
    request_card,
    request_url,
    spend_text,
    tree,
)
from envelopes.models import ApprovalRequest, Channel, ChannelInvite
from envelopes.requests.decisions import MANAGER_LEVEL, act, refusal
from envelopes.services.integrity import IntegrityRecord, assess_chain, envelope_events
from evidence.admin import ReadOnlyAdmin
from governance.api.errors import APIError
from governance.choices import Role


def _scoped(request, queryset, owner_field: str, organization_field: str):
    """The organization's rows for platform admins (every organization's for superusers), the
    person's own otherwise."""
    user = request.user
    if user.is_superuser:
        return queryset
    organization = console_organization(request)
    if organization is None:
        return queryset.none()
    queryset = queryset.filter(**{organization_field: organization})
    if Role.PLATFORM_ADMIN in console_roles(request):
        return queryset
    return queryset.filter(**{owner_field: user})


class ConsoleReadOnlyAdmin(ReadOnlyAdmin):
    """Open to anyone on staff in an organization; each admin's ``scope`` picks the rows."""

    owner_field = "owner"
    organization_field = "organization"

    def has_module_permission(self, request):
        return may_use_console(request)

    def has_view_permission(self, request, obj=None):
        return may_use_console(request)

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
        viewer = Viewer.of(request)
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


# --- approval rules' progress -----------------------------------------------------------


@dataclass
class Vote:
    person: str
    approve: bool
    step: int
    comment: str
    at: datetime


@dataclass
class Step:
    number: int
    who: str
    state: str  # done | current | waiting


@dataclass
class Progress:
    rule: str  # single | sequential | n_of_x
    headline: str  # "1 of 2 approvals", "step 2 of 3", "one approval decides"
    approvals: int = 0
    required: int = 0
    steps: list[Step] = field(default_factory=list)
    approvers: str = ""  # n_of_x: who may approve, in words
    votes: list[Vote] = field(default_factory=list)
    note: str = ""


def progress_of(approval: ApprovalRequest, votes: list, names: Names) -> Progress:
    rule = approval.approval_rule or {"type": "single"}
    approvals = sum(1 for v in votes if v.approve)
    vote_rows = [Vote(names.person(v.person_id), v.approve, v.step, v.comment, v.at) for v in votes]
    kind = rule.get("type", "single")
    if is_fyi(approval):
        return Progress("fyi", "one acknowledgement closes it", votes=vote_rows)
    if kind == "n_of_x":
        required = rule.get("required") or 1
        progress = Progress(
            kind,
            f"{approvals} of {required} approvals",
            approvals=approvals,
            required=required,
            approvers=", ".join(names.entry(e) for e in rule.get("approvers") or []),
            votes=vote_rows,
            note="Distinct approvers; a rejection ends it only when the approvals still possible cannot reach "
            f"{required}.",
        )
    elif kind == "sequential":
        steps = rule.get("steps") or []
        current = min(approvals, len(steps) - 1) if steps else 0
        final = approval.status in (RequestStatus.APPROVED,)
        progress = Progress(
            kind,
            f"step {min(approvals + 1, len(steps))} of {len(steps)}"
            if not final
            else f"all {len(steps)} steps approved",
            approvals=approvals,
            required=len(steps),
            steps=[
                Step(
                    index + 1,
                    " or ".join(names.entry(e) for e in step),
                    "done" if index < approvals or final else ("current" if index == current else "waiting"),
                )
                for index, step in enumerate(steps)
            ],
            votes=vote_rows,
            note="Steps complete in order; any rejection rejects.",
        )
    else:
        progress = Progress("single", "one approval or rejection decides", votes=vote_rows)
    if approval.escalation_level:
        who = (
            "the owner's manager"
            if approval.escalation_level == MANAGER_LEVEL and approval.channel.owner.manager_id
            else "any platform admin"
        )
        progress.note = f"Re-routed after its timeout: {who} decides alone now."
    return progress


# --- the request page ---------------------------------------------------------------------

ACTIONS = {
    # name: (label, what it needs, style, shortcut)
    "approve": ("Approve", "", "approve", "a"),
    "choose": ("Choose", "choice", "approve", "a"),
    "answer": ("Send answer", "input", "approve", "a"),
    "acknowledge": ("Acknowledge", "", "approve", "a"),
    "reject": ("Reject", "comment", "reject", "r"),
    "request_changes": ("Request changes", "comment", "neutral", "c"),
    "withdraw_tweak": ("Withdraw change request", "", "neutral", "w"),
}

DONE_MESSAGES = {
    "acknowledge": "Acknowledged. The agent is told.",
    "request_changes": "Change request sent to the agent. This card waits for its new version.",
    "withdraw_tweak": "Change request withdrawn. The agent is told; the card waits for a decision again.",
}


@dataclass
class ActionButton:
    name: str
    label: str
    needs: str
    style: str
    key: str
    enabled: bool
    why: str


def action_names(approval: ApprovalRequest, open_tweak) -> list[str]:
    if is_fyi(approval):
        return ["acknowledge"]
    return [primary_action(approval), "reject", "withdraw_tweak" if open_tweak else "request_changes"]


def action_buttons(approval: ApprovalRequest, person, open_tweak) -> list[ActionButton]:
    buttons = []
    for name in action_names(approval, open_tweak):
        refused = refusal(approval, person, name)
        label, needs, style, key = ACTIONS[name]
        buttons.append(
            ActionButton(name, label, needs, style, key, refused is None, refused.message if refused else "")
        )
    return buttons


class DecisionForm(forms.Form):
    """One action on an agent's request. Reject and request changes need a reason; the service
    checks everything else (who may, the options, the answer)."""

    action = forms.ChoiceField(choices=[(name, spec[0]) for name, spec in ACTIONS.items()])
    comment = forms.CharField(required=False, max_length=5000)
    choice = forms.CharField(required=False, max_length=500)
    input = forms.CharField(required=False, max_length=20000)

    def clean(self):
        data = super().clean()
        action, comment = data.get("action"), (data.get("comment") or "").strip()
        if action == "reject" and not comment:
            self.add_error("comment", "Say why you reject it: the agent receives your comment.")
        if action == "request_changes" and not comment:
            self.add_error("comment", "Say what should change: the agent receives this text.")
        if action == "answer" and not (data.get("input") or "").strip():
            self.add_error("input", "Write the answer the agent asked for.")
        if action == "choose" and not (data.get("choice") or "").strip():
            self.add_error("choice", "Pick one of the options.")
        return data


@dataclass
class Option:
    value: str
    label: str
    detail: str = ""
    chosen: bool = False


def payload_view(approval: ApprovalRequest) -> dict:
    """The payload, readably: options of a choice, the prompt of an input request, the amount of
    a spend, the poll of a poll request; everything else as labelled fields."""
    payload = approval.payload
    view = {"options": [], "prompt": "", "amount": "", "poll": None}
    if not isinstance(payload, dict):
        view["rest"] = tree(payload)
        return view
    rest = dict(payload)
    if approval.type == RequestType.CHOICE:
        for option in rest.pop("options", None) or []:
            if isinstance(option, dict):
                value = option.get("id", option.get("label"))
                detail = option.get("description") or option.get("detail") or ""
                label = option.get("label", value)
            else:
                value, label, detail = option, option, ""
            view["options"].append(
                Option(
                    str(value), str(label), str(detail), chosen=approval.choice is not None and approval.choice == value
                )
            )
    if approval.type == RequestType.INPUT_REQUEST:
        for key in ("prompt", "question", "input_prompt", "instructions"):
            if isinstance(rest.get(key), str):
                view["prompt"] = rest.pop(key)
                break
        view["placeholder"] = rest.pop("placeholder", "") if isinstance(rest.get("placeholder"), str) else ""
    if approval.type == RequestType.SPEND_APPROVAL:
        view["amount"] = spend_text(approval)
        rest.pop("amount", None)
        rest.pop("currency", None)
    if approval.type == RequestType.POLL_REQUEST and isinstance(rest.get("poll_url"), str):
        url = rest.pop("poll_url")
        hint = rest.pop("poll_render_hint", None)
        hint = hint if isinstance(hint, dict) else {}

        def size(key, low, high, default):
            value = hint.get(key)
            return max(low, min(high, value)) if isinstance(value, int) and not isinstance(value, bool) else default

        view["poll"] = {
            "url": url,
            "https": url.startswith("https://"),
            "embed": hint.get("embed") == "iframe" and url.startswith("https://"),
            "width": size("width", 240, 1200, 600),
            "height": size("height", 160, 900, 400),
            "provider": str(rest.pop("poll_provider", "") or ""),
            "poll_id": str(rest.pop("poll_id", "") or ""),
            "instructions": str(rest.pop("poll_instructions", "") or ""),
        }
    view["rest"] = tree(rest) if rest else None
    return view


@dataclass
class ThreadItem:
    id: str
    url: str
    title: str
    type: str
    status: str
    created_at: datetime
    current: bool
    depth: int


def thread_of(approval: ApprovalRequest, limit: int = 50) -> list[ThreadItem]:
    """The request's history as one thread: its first version, every later version (answers to
    change requests), in order."""
    root, seen = approval, {approval.pk}
    while root.parent_id and root.parent_id not in seen and len(seen) < limit:
        seen.add(root.parent_id)
        root = ApprovalRequest.objects.select_related("envelope").get(pk=root.parent_id)
    items, level, depth = [], [root], 0
    while level and len(items) < limit:
        items.extend(
            ThreadItem(
                str(r.pk),
                request_url(r.pk),
                r.title,
                TYPE_LABELS.get(r.type, r.type),
                STATUS_LABELS.get(r.status, r.status),
                r.envelope.created_at,
                r.pk == approval.pk,
                depth,
            )
            for r in level
        )
        level = list(
            ApprovalRequest.objects.filter(parent__in=level)
            .exclude(pk__in=[i.id for i in items])
            .select_related("envelope")
            .order_by("envelope__created_at")
        )
        depth += 1
    return items


def _flatten(value, prefix="") -> dict[str, str]:
    if isinstance(value, dict) and value:
        flat = {}
        for key, item in value.items():
            flat.update(_flatten(item, f"{prefix}.{key}" if prefix else str(key)))
        return flat
    if isinstance(value, list) and value:
        flat = {}
        for index, item in enumerate(value):
            flat.update(_flatten(item, f"{prefix}[{index}]"))
        return flat
    return {prefix or "(value)": value if isinstance(value, str) else json.dumps(value)}


def changes_since(parent: ApprovalRequest, approval: ApprovalRequest, limit: int = 40) -> list[dict]:
    """What changed from the previous version of the card to this one."""
    before = {"title": parent.title, "summary": parent.summary, "risk level": parent.risk_level, "type": parent.type}
    after = {
        "title": approval.title,
        "summary": approval.summary,
        "risk level": approval.risk_level,
        "type": approval.type,
    }
    before.update({f"payload.{k}": v for k, v in _flatten(parent.payload).items()})
    after.update({f"payload.{k}": v for k, v in _flatten(approval.payload).items()})
    rows = []
    for key in list(dict.fromkeys([*before, *after])):
        if before.get(key) != after.get(key):
            rows.append({"field": key, "before": before.get(key), "after": after.get(key)})
    return rows[:limit]


@dataclass
class Outcome:
    status: str
    label: str
    by: str
    at: datetime | None
    comments: str
    choice: str
    input: str


def outcome_of(approval: ApprovalRequest, names: Names, options: list[Option]) -> Outcome | None:
    if approval.status == RequestStatus.PENDING:
        return None
    by = "the system" if approval.decided_by in ("", "system") else names.person(approval.decided_by)
    choice = ""
    if approval.choice is not None:
        choice = next((o.label for o in options if o.chosen), str(approval.choice))
    return Outcome(
        approval.status,
        STATUS_LABELS.get(approval.status, approval.status),
        by,
        approval.decision_time,
        approval.comments,
        choice,
        approval.input_text,
    )


def _load_request(organization, object_id):
    if organization is None or not is_uuid(unquote(object_id)):
        return None
    return (
        ApprovalRequest.objects.select_related(
            "envelope", "channel__owner__manager", "channel__agent", "team", "parent"
        )
        .filter(pk=unquote(object_id), channel__organization=organization)
        .first()
    )


def _act_on(request, approval: ApprovalRequest, form: DecisionForm) -> int:
    """Run the action through ``decisions.act``; a message says what happened. Returns the
    HTTP status for the page (200 when done)."""
    data = form.cleaned_data
    action = data["action"]
    try:
        act(
            approval.channel.organization_id,
            approval.pk,
            request.user,
            action,
            comment=data.get("comment") or "",
            choice=data.get("choice") or None,
            input_text=data.get("input") or "",
        )
    except APIError as exc:
        approval.refresh_from_db()
        if exc.status_code == 409 and approval.status != RequestStatus.PENDING:
            names = Names.for_rules([], [approval.decided_by])
            outcome = outcome_of(approval, names, [])
            when = outcome.at.strftime("%Y-%m-%d %H:%M:%S UTC") if outcome.at else "an earlier time"
            messages.error(
                request,
                f"Not recorded: this request was already {outcome.label.lower()} by {outcome.by} at {when}.",
            )
        else:
            messages.error(request, f"Not recorded: {exc.error}.")
        return exc.status_code
    approval.refresh_from_db()
    if action in DONE_MESSAGES:
        messages.success(request, DONE_MESSAGES[action])
    elif approval.status == RequestStatus.PENDING:
        progress = progress_line(approval)
        verb = "approval" if action == "approve" else "rejection"
        messages.success(
            request, f"Your {verb} is recorded{f' ({progress})' if progress else ''}; it waits for others."
        )
    else:
        label = STATUS_LABELS.get(approval.status, approval.status)
        messages.success(request, f"{label}. The agent receives the decision by long-poll and webhook.")
    return 200


def request_page(model_admin, request, object_id):
    """Everything needed to decide an agent's request, and the actions (POST) this person may take."""
    viewer = Viewer.of(request)
    approval = _load_request(viewer.organization, object_id)
    if approval is None:
        return model_admin._get_obj_does_not_exist_redirect(request, model_admin.opts, object_id)
    if not may_see_request(viewer, approval):
        raise PermissionDenied
    form = DecisionForm(request.POST or None)
    status = 200
    if request.method == "POST":
        if form.is_valid():
            status = _act_on(request, approval, form)
            if status == 200:
                return redirect(request.get_full_path())
        else:
            status = 400
    return TemplateResponse(
        request,
        "admin/envelopes/request.html",
        request_context(model_admin, request, viewer, approval, form),
        status=status,
    )


def request_context(model_admin, request, viewer: Viewer, approval: ApprovalRequest, form) -> dict:
    envelope = approval.envelope
    now = timezone.now()
    votes = list(approval.approvals.select_related("person"))
    tweaks = list(approval.tweaks.select_related("requested_by", "resolved_by__envelope"))
    open_tweak = next((t for t in tweaks if t.status == TweakStatus.OPEN), None)
    names = Names.for_rules([approval.approval_rule or {}], [approval.decided_by, *(str(v.person_id) for v in votes)])
    declarations = Declarations.for_envelopes(envelope.organization_id, [envelope])
    approval.open_tweaks = [open_tweak] if open_tweak else []
    card = request_card(envelope, declarations, ..., now, names)
    payload = payload_view(approval)
    waiting = approval.status == RequestStatus.PENDING
    buttons = action_buttons(approval, viewer.person, open_tweak) if waiting else []
    reasons = list(dict.fromkeys(b.why for b in buttons if not b.enabled))
    events = envelope_events(envelope)
    previous_url, next_url = neighbours(envelope) if viewer.reads_all else ("", "")
    thread = thread_of(approval)
    route_text = ROUTE_TEXTS.get(approval.route, approval.route)
    if approval.route in (Route.APPROVE_TEAM, Route.NOTIFY_TEAM_OWNER) and approval.team_id:
        route_text = f"{route_text} {approval.team.name}." if approval.route == Route.APPROVE_TEAM else route_text
    return {
        **model_admin.admin_site.each_context(request),
        "opts": model_admin.opts,
        "title": approval.title,
        "approval": approval,
        "envelope": envelope,
        "card": card,
        "hints": card.hints,
        "waiting": waiting,
        "fyi": is_fyi(approval),
        "buttons": buttons,
        "may_act": any(b.enabled for b in buttons),
        "reasons": reasons,
        "form": form,
        "payload": payload,
        "progress": progress_of(approval, votes, names),
        "clock": clock_of(approval, now) if waiting else None,
        "outcome": outcome_of(approval, names, payload["options"]),
        "tweaks": tweaks,
        "open_tweak": open_tweak,
        "thread": thread if len(thread) > 1 else [],
        "changes": changes_since(approval.parent, approval) if approval.parent_id else [],
        "route_text": route_text,
        "route": approval.get_route_display(),
        "owner": person_label(approval.channel.owner),
        "manager": person_label(approval.channel.owner.manager),
        "chain": chain_rows(events),
        "verdict": assess_chain(events, IntegrityRecord.of(envelope)),
        "raw_submitted": envelope.submitted_raw,
        "raw_payload": json.dumps(approval.payload, indent=2, ensure_ascii=False),
        "previous_url": previous_url,
        "next_url": next_url,
        "inbox_url": reverse("admin:index"),
        "integrity_api": f"/v1/evidence/envelopes/{envelope.pk}/integrity",
        "live_url": reverse("admin:envelopes_inbox_live") + f"?envelope={envelope.pk}",
        "live_version": envelope_version(envelope),
        "decision_version": f"{approval.status}.{len(votes)}.{len(tweaks)}.{open_tweak is not None}",
    }
