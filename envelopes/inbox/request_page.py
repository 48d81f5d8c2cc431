"""The request page (``/admin/envelopes/approvalrequest/<id>/change/``): everything needed to
decide an agent's request, and the actions this person may take on it.

Nothing here decides: every action goes through ``deciding.decide_request``, and
``permissions.card_actions`` says which buttons are enabled and why the others are not.
"""

import json
from dataclasses import dataclass
from datetime import datetime

from django import forms
from django.contrib import messages
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.utils import timezone

from envelopes.choices import RequestStatus, Route, TweakStatus
from envelopes.inbox.cards import Declarations, clock_of, request_card
from envelopes.inbox.console import viewer_of
from envelopes.inbox.deciding import decide_request
from envelopes.inbox.documents import chain_rows
from envelopes.inbox.history import changes_since, thread_of
from envelopes.inbox.ids import is_uuid
from envelopes.inbox.labels import ROUTE_TEXTS, STATUS_LABELS, Names, person_label
from envelopes.inbox.payloads import Option, payload_view
from envelopes.inbox.permissions import Viewer, card_actions, may_see_request
from envelopes.inbox.progress import progress_line, progress_of
from envelopes.inbox.waiting import envelope_links
from envelopes.models import ApprovalRequest, Tweak
from envelopes.services.integrity import IntegrityRecord, assess_chain, envelope_events
from governance.api.errors import domain_status
from governance.errors import Conflict, DomainError

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


def action_buttons(viewer: Viewer, approval: ApprovalRequest, open_tweak) -> list[ActionButton]:
    buttons = []
    for action in card_actions(viewer, approval, open_tweak):
        label, needs, style, key = ACTIONS[action.name]
        buttons.append(ActionButton(action.name, label, needs, style, key, action.allowed, action.why_not))
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
    """Run the action through ``deciding.decide_request``; a message says what happened. Returns
    the HTTP status for the page (200 when done)."""
    data = form.cleaned_data
    action = data["action"]
    try:
        decide_request(
            approval.channel.organization_id,
            approval.pk,
            request.user,
            action,
            comment=data.get("comment") or "",
            choice=data.get("choice") or None,
            input_text=data.get("input") or "",
        )
    except DomainError as exc:
        approval.refresh_from_db()
        if isinstance(exc, Conflict) and approval.status != RequestStatus.PENDING:
            names = Names.for_rules([], [approval.decided_by])
            outcome = outcome_of(approval, names, [])
            when = outcome.at.strftime("%Y-%m-%d %H:%M:%S UTC") if outcome.at else "an earlier time"
            messages.error(
                request,
                f"Not recorded: this request was already {outcome.label.lower()} by {outcome.by} at {when}.",
            )
        else:
            messages.error(request, f"Not recorded: {exc.message}.")
        return domain_status(exc)
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
    viewer = viewer_of(request)
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
    # This version answers a change request made on the previous one: the approver deciding
    # it reads what was asked next to what changed.
    answers = Tweak.objects.select_related("requested_by", "request").filter(resolved_by=approval).first()
    names = Names.for_rules([approval.approval_rule or {}], [approval.decided_by, *(str(v.person_id) for v in votes)])
    declarations = Declarations.for_envelopes(envelope.organization_id, [envelope])
    approval.open_tweaks = [open_tweak] if open_tweak else []
    card = request_card(envelope, declarations, ..., now, names)
    payload = payload_view(approval)
    waiting = approval.status == RequestStatus.PENDING
    buttons = action_buttons(viewer, approval, open_tweak) if waiting else []
    reasons = list(dict.fromkeys(b.why for b in buttons if not b.enabled))
    events = envelope_events(envelope)
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
        "fyi": approval.is_fyi,
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
        "answers": answers,
        "thread": thread if len(thread) > 1 else [],
        "changes": changes_since(approval.parent, approval) if approval.parent_id else [],
        "route_text": route_text,
        "route": approval.get_route_display(),
        "owner": person_label(approval.channel.owner),
        "manager": person_label(approval.channel.owner.manager),
        "chain": chain_rows(events, envelope.organization_id),
        "verdict": assess_chain(events, IntegrityRecord.of(envelope)),
        "raw_submitted": envelope.submitted_raw,
        "raw_payload": json.dumps(approval.payload, indent=2, ensure_ascii=False),
        **envelope_links(envelope, with_neighbours=viewer.reads_all),
        "decision_version": f"{approval.status}.{len(votes)}.{len(tweaks)}.{open_tweak is not None}",
    }
