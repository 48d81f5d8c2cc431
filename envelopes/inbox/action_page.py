"""The held-action page (``/admin/envelopes/envelope/<id>/action/``): the exact plan that will
run, why the gate held it, its evidence, and for operators Approve (optionally learning the
domain or path it was held for) and Deny.

Nothing here decides: both go through ``deciding.decide_held_action``, the core's one decision
path with the held action's rules. Approving claims it; the gate then runs the stored plan
after the commit, in this request's thread, so the page the browser is sent back to already
shows how it ended (or ``claimed`` while the gate is not wired, as in some tests).
"""

from dataclasses import dataclass
from datetime import datetime

from django import forms
from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.http import Http404
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.utils import timezone

from envelopes.choices import EnvelopeKind
from envelopes.inbox.action_plans import plan_view, raw_json
from envelopes.inbox.cards import Declarations, action_card, held_action_clock
from envelopes.inbox.console import viewer_of
from envelopes.inbox.deciding import decide_held_action, held_action_refusal
from envelopes.inbox.documents import chain_rows, tree
from envelopes.inbox.ids import is_uuid
from envelopes.inbox.labels import GATE_STATE_LABELS, hold_reason_text
from envelopes.inbox.permissions import Viewer, may_open_inbox
from envelopes.inbox.waiting import envelope_links, envelope_version
from envelopes.models import Envelope, GateApproval, GateApprovalState
from envelopes.services.integrity import IntegrityRecord, assess_chain, envelope_events
from evidence.performers import PerformerNames
from governance.api.errors import domain_status
from governance.errors import Conflict, DomainError

STAMP = "%Y-%m-%d %H:%M:%S UTC"


class HeldActionForm(forms.Form):
    """Approve (learning the domain or path when ticked) or deny, with the reason denying needs.
    Whether the learned domain or path is acceptable is the gate's to say when it learns it."""

    action = forms.ChoiceField(choices=[("approve", "Approve"), ("deny", "Deny")])
    comment = forms.CharField(required=False, max_length=500)
    learn_domain_on = forms.BooleanField(required=False)
    learn_domain = forms.CharField(required=False, max_length=255)
    learn_path_on = forms.BooleanField(required=False)
    learn_path = forms.CharField(required=False, max_length=1024)

    def clean(self):
        data = super().clean()
        if data.get("action") == "deny" and not (data.get("comment") or "").strip():
            self.add_error("comment", "Say why you deny it: the reason is recorded and the agent can read it.")
        for name, what in (("learn_domain", "domain"), ("learn_path", "path")):
            value = (data.get(name) or "").strip()
            data[name] = value if data.get(f"{name}_on") and data.get("action") == "approve" else ""
            if data.get(f"{name}_on") and data.get("action") == "approve" and not value:
                self.add_error(name, f"Name the {what} to learn, or untick it.")
        return data


@dataclass
class Outcome:
    """How a held action stands once someone decided it (or it expired)."""

    state: str
    label: str
    by: str
    at: datetime | None
    reason: str
    receipt_id: str
    failure: str
    learned_domain: str
    learned_path: str


def outcome_of(approval: GateApproval, performers: PerformerNames) -> Outcome | None:
    if approval.state == GateApprovalState.PENDING:
        return None
    expired = approval.state == GateApprovalState.EXPIRED
    return Outcome(
        approval.state,
        GATE_STATE_LABELS.get(approval.state, approval.state),
        "" if expired or not approval.decided_by else performers.name("user", approval.decided_by),
        approval.expires_at if expired else approval.decided_at,
        approval.deny_reason,
        approval.receipt_id,
        approval.failure,
        approval.learn_domain,
        approval.learn_path,
    )


def _load(viewer: Viewer, object_id) -> Envelope:
    """The organization's held action, or 404 (an unknown id and another organization's alike)."""
    organization = viewer.organization
    if organization is None or not is_uuid(object_id):
        raise Http404("no such held action")
    envelope = (
        Envelope.objects.select_related("gate_approval")
        .filter(pk=object_id, organization=organization, kind=EnvelopeKind.ACTION)
        .first()
    )
    if envelope is None or not hasattr(envelope, "gate_approval"):
        raise Http404("no such held action")
    return envelope


def _decide(request, envelope: Envelope, form: HeldActionForm) -> int:
    """Send the decision through the core; a message says what happened. The page's status."""
    data = form.cleaned_data
    approval = envelope.gate_approval
    try:
        decide_held_action(
            envelope.organization_id,
            envelope.pk,
            request.user,
            data["action"],
            reason=data.get("comment") or "",
            learn_domain=data.get("learn_domain") or "",
            learn_path=data.get("learn_path") or "",
        )
    except DomainError as exc:
        approval.refresh_from_db()
        if isinstance(exc, Conflict) and approval.state != GateApprovalState.PENDING:
            performers = PerformerNames.of(envelope.organization_id, [("user", approval.decided_by)])
            outcome = outcome_of(approval, performers)
            by = f" by {outcome.by}" if outcome.by else ""
            when = outcome.at.strftime(STAMP) if outcome.at else "an earlier time"
            messages.error(
                request, f"Not recorded: this held action was already {outcome.label.lower()}{by} at {when}."
            )
        else:
            messages.error(request, f"Not recorded: {exc.message}.")
        return domain_status(exc)
    approval.refresh_from_db()
    messages.success(request, _done_message(approval))
    return 200


def _done_message(approval: GateApproval) -> str:
    if approval.state == GateApprovalState.DENIED:
        return "Denied. The action does not run; the agent sees it denied when it polls."
    if approval.state == GateApprovalState.APPROVED:
        receipt = f" Receipt {approval.receipt_id}." if approval.receipt_id else ""
        return f"Approved and executed.{receipt}"
    if approval.state == GateApprovalState.FAILED:
        return f"Approved, but executing the stored plan failed: {approval.failure or 'no reason recorded'}."
    return "Approved. The stored plan is claimed for execution; this page shows how it ends."


def action_page(model_admin, request, object_id):
    """Everything needed to decide one held action, and the decision (POST)."""
    viewer = viewer_of(request)
    if not may_open_inbox(viewer):
        raise PermissionDenied
    envelope = _load(viewer, object_id)
    form = HeldActionForm(request.POST or None)
    status = 200
    if request.method == "POST":
        if form.is_valid():
            status = _decide(request, envelope, form)
            if status == 200:
                return redirect(request.get_full_path())
        else:
            status = 400
        envelope.refresh_from_db()
        envelope.gate_approval.refresh_from_db()
    context = action_context(model_admin, request, viewer, envelope, form)
    return TemplateResponse(request, "admin/envelopes/action.html", context, status=status)


def action_context(model_admin, request, viewer: Viewer, envelope: Envelope, form) -> dict:
    approval = envelope.gate_approval
    now = timezone.now()
    events = envelope_events(envelope)
    performers = PerformerNames.of(envelope.organization_id, [("user", approval.decided_by)])
    declarations = Declarations.for_envelopes(envelope.organization_id, [envelope])
    waiting = approval.state == GateApprovalState.PENDING
    refused = held_action_refusal(approval, viewer.actor()) if waiting else None
    card = action_card(envelope, declarations, refused if waiting else ..., now, performers)
    plan = plan_view(approval)
    return {
        **model_admin.admin_site.each_context(request),
        "opts": model_admin.opts,
        "title": card.title,
        "envelope": envelope,
        "approval": approval,
        "card": card,
        "plan": plan,
        "waiting": waiting,
        "claimed": approval.state == GateApprovalState.CLAIMED,
        "may_decide": waiting and refused is None,
        "why_not": refused.message if refused is not None else "",
        "form": form,
        "learn_domain": form["learn_domain"].value() if form.is_bound else plan.learn_domain,
        "learn_path": form["learn_path"].value() if form.is_bound else plan.learn_path,
        "hold_reason": hold_reason_text(approval.hold_reason),
        "clock": held_action_clock(approval, now),
        "outcome": outcome_of(approval, performers),
        "request_tree": tree(approval.request_body),
        "budget_tree": tree(approval.budget_snapshot) if approval.budget_snapshot else None,
        "raw_request": raw_json(approval.request_body),
        "raw_plan": raw_json(approval.plan),
        "chain": chain_rows(events, envelope.organization_id),
        "verdict": assess_chain(events, IntegrityRecord.of(envelope)),
        **envelope_links(envelope),
        "decision_version": f"{approval.state}.{envelope_version(envelope)}",
    }
