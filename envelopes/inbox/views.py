"""The inbox's pages: the inbox on the admin index, the live version pages poll (and the
live stream's stand-in when the stream is not answered in front of Django), bulk
acknowledge of FYI cards, and the review page where an escalated evaluation is decided.

Views parse, authorize and render. Who may do what is ``permissions``; deciding goes through
``deciding`` (the services' answer is final: when someone else decided first, the refusal
becomes a message naming who decided and when). The request page is ``request_page``, the
held-action page ``action_page``.
"""

import json
import uuid

from django import forms
from django.contrib import messages
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied
from django.http import HttpResponse, JsonResponse
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils import timezone
from django.utils.http import url_has_allowed_host_and_scheme

from envelopes.choices import EnvelopeKind, EnvelopeState, ReviewDecision
from envelopes.inbox.cards import Declarations, card_for, card_url
from envelopes.inbox.console import viewer_of
from envelopes.inbox.deciding import acknowledge_all, review_escalation
from envelopes.inbox.documents import chain_rows, sections_of
from envelopes.inbox.ids import is_uuid
from envelopes.inbox.listing import INBOX_PAGE_SIZE, inbox_for
from envelopes.inbox.permissions import may_review, may_use_console, why_no_inbox, why_not_review
from envelopes.inbox.waiting import envelope_links, envelope_version, inbox_version, version_of
from envelopes.models import ApprovalRequest, Envelope
from envelopes.representation import envelope_representation
from envelopes.services.integrity import IntegrityRecord, assess_chain, envelope_events
from evidence.performers import PerformerNames
from governance.errors import Conflict, DomainError


def inbox_context(request) -> dict:
    """The ``inbox`` the admin index renders."""
    viewer = viewer_of(request)
    if not may_use_console(viewer):
        return {"inbox": {"visible": False, "why": why_no_inbox()}}
    inbox = inbox_for(viewer, request.GET, timezone.now())
    inbox["live_url"] = reverse("admin:envelopes_inbox_live")
    inbox["stream_url"] = reverse("admin:envelopes_inbox_events")
    inbox["acknowledge_url"] = reverse("admin:envelopes_inbox_acknowledge")
    if viewer.organization is not None:
        inbox["list_url"] = reverse("admin:envelopes_envelope_changelist") + "?state__exact=awaiting_review"
    return {"inbox": inbox}


def live_state(request):
    """``GET`` the inbox's (or one envelope's) version: pages poll this small answer every few
    seconds and fetch themselves again only when it changes."""
    viewer = viewer_of(request)
    if not may_use_console(viewer):
        return JsonResponse({"error": "forbidden"}, status=403)
    organization = viewer.organization
    envelope_id = request.GET.get("envelope", "")
    if envelope_id:
        envelope = (
            Envelope.objects.filter(pk=envelope_id, organization=organization).only("state", "updated_at").first()
            if is_uuid(envelope_id) and organization is not None
            else None
        )
        if envelope is None:
            return JsonResponse({"error": "not found"}, status=404)
        body = {"version": envelope_version(envelope), "state": envelope.state}
    else:
        body = {"version": inbox_version(organization) if organization else version_of(0, None)}
    response = JsonResponse(body)
    response["Cache-Control"] = "no-store"
    return response


def live_events(request):
    """The inbox's live stream is answered in front of Django (``stream_route``, under the
    ASGI server). Reaching Django means it is not (WSGI, the test client): 204 tells the
    browser's EventSource not to reconnect, and the page polls ``live_state`` instead."""
    return HttpResponse(status=204, headers={"Cache-Control": "no-store"})


def acknowledge_many(request):
    """Bulk acknowledge FYI cards (``POST ids``): one batch through the core, each on its own."""
    if request.method != "POST":
        return redirect("admin:index")
    viewer = viewer_of(request)
    if not may_use_console(viewer):
        raise PermissionDenied
    organization = viewer.organization
    ids = [value for value in request.POST.getlist("ids") if is_uuid(value)]
    done, refused = 0, []
    ids = ids[:INBOX_PAGE_SIZE]
    outcomes = acknowledge_all(organization.pk if organization else None, ids, viewer.person) if ids else []
    titles = dict(ApprovalRequest.objects.filter(pk__in=ids).values_list("pk", "title")) if outcomes else {}
    for request_id, outcome in zip(ids, outcomes, strict=True):
        if outcome.error is None:
            done += 1
        else:
            title = titles.get(uuid.UUID(request_id))
            refused.append(f"“{title or request_id}”: {outcome.error.message}")
    if done:
        messages.success(request, f"Acknowledged {done} card{'s' if done != 1 else ''}.")
    if refused:
        messages.error(request, "Not acknowledged — " + "; ".join(refused))
    if not ids:
        messages.warning(request, "Select the FYI cards to acknowledge first.")
    back = request.POST.get("next", "")
    if not url_has_allowed_host_and_scheme(back, allowed_hosts={request.get_host()}) or not back.startswith("/"):
        back = reverse("admin:index")
    return redirect(back)


# --- the review page -----------------------------------------------------------------------


class ReviewForm(forms.Form):
    decision = forms.ChoiceField(choices=[("approve", "Approve"), ("reject", "Reject")])
    notes = forms.CharField(
        required=False,
        max_length=5000,
        widget=forms.Textarea(attrs={"rows": 3, "placeholder": "Why you decide this way (required to reject)"}),
    )

    def clean(self):
        data = super().clean()
        if data.get("decision") == "reject" and not (data.get("notes") or "").strip():
            self.add_error("notes", "Say why you reject it: the notes are recorded in the evidence chain.")
        return data


def decide(request, envelope, form: ReviewForm) -> None:
    """Record the decision through ``deciding``; say what happened."""
    decision = form.cleaned_data["decision"]
    try:
        review_escalation(envelope.organization, envelope.pk, decision, request.user, form.cleaned_data["notes"])
    except DomainError as exc:
        if isinstance(exc, Conflict):
            envelope.refresh_from_db()
            messages.error(request, f"Your decision was not recorded: this envelope was already {_decided(envelope)}.")
        else:
            messages.error(request, f"Your decision was not recorded: {exc.message}")
        return
    verb = "Approved" if decision == "approve" else "Rejected"
    messages.success(request, f"{verb}. The envelope is closed and the decision is in its evidence chain.")


def _decided(envelope) -> str:
    if not envelope.review_decision:
        return f"{envelope.state.replace('_', ' ')}"
    when = envelope.reviewed_at.strftime("%Y-%m-%d %H:%M:%S UTC") if envelope.reviewed_at else "an unknown time"
    return f"{envelope.review_decision.lower()} by {reviewer_name(envelope)} at {when}"


def reviewer_name(envelope) -> str:
    """The reviewer as people are named across the console ("Demo Admin (admin)")."""
    return PerformerNames.of(envelope.organization_id, [("user", envelope.reviewer_id)]).name(
        "user", envelope.reviewer_id
    )


def review_page(model_admin, request, object_id):
    """Everything needed to decide one envelope, and the decision itself (POST)."""
    envelope = model_admin.get_object(request, unquote(object_id))
    if envelope is None:
        return model_admin._get_obj_does_not_exist_redirect(request, model_admin.opts, object_id)
    if envelope.kind in (EnvelopeKind.APPROVAL_REQUEST, EnvelopeKind.ACTION):
        return redirect(card_url(envelope))  # an agent's request and a held action have their own pages
    if not model_admin.has_view_permission(request, envelope):
        raise PermissionDenied
    viewer = viewer_of(request)
    form = ReviewForm(request.POST or None)
    if request.method == "POST":
        if not may_review(viewer):
            raise PermissionDenied
        if form.is_valid():
            decide(request, envelope, form)
            return redirect(request.get_full_path())

    events = envelope_events(envelope)
    verdict = assess_chain(events, IntegrityRecord.of(envelope))
    document = envelope_representation(envelope)
    declarations = Declarations.for_envelopes(envelope.organization_id, [envelope])
    card = card_for(envelope, declarations)
    context = {
        **model_admin.admin_site.each_context(request),
        "opts": model_admin.opts,
        "title": f"{card.title}: {envelope.agent_id or envelope.request_id}",
        "envelope": envelope,
        "card": card,
        "waiting": envelope.state == EnvelopeState.AWAITING_REVIEW,
        "approved": envelope.review_decision == ReviewDecision.APPROVED,
        "reviewer": reviewer_name(envelope) if envelope.review_decision else "",
        "may_review": may_review(viewer),
        "why_not": "" if may_review(viewer) else why_not_review(viewer),
        "form": form,
        "sections": sections_of(envelope, card.facts),
        "chain": chain_rows(events, envelope.organization_id),
        "verdict": verdict,
        "raw_envelope": json.dumps(document, indent=2),
        **envelope_links(envelope),
    }
    status = 400 if request.method == "POST" else 200
    return TemplateResponse(request, "admin/envelopes/review.html", context, status=status)
