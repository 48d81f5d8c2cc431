"""The control-plane console's own pages: bundle upload (preview, then apply) and the
lifecycle panels on surface, profile and grant pages.

Views here parse, authorize and render; the rules live in the services they call
(``plan_bundle``/``apply_bundle``, ``controlplane.services.lifecycle``,
``controlplane.services.recovery``). The enabled/disabled state of a lifecycle button is a
hint for the person reading the page; the service call the button makes decides, and its
refusal is shown as an error message.
"""

import hashlib
import json
import secrets
from dataclasses import dataclass

from django import forms
from django.contrib import messages
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import reverse

from controlplane.api.base import APPLY_ROLES, LIFECYCLE_ROLES
from controlplane.api.bundles import MAX_BUNDLE_BYTES, ApplyView
from controlplane.choices import GRANT_TRANSITIONS, Kind, ProfileStatus, SurfaceStatus
from controlplane.models import Profile, Surface
from controlplane.services.bundles import apply_bundle, plan_bundle
from controlplane.services.documents import BundleSyntaxError
from controlplane.services.lifecycle import GRANT_ACTIONS, Principal, surface_approval_refusal
from evidence.services.audit_trails import record_admin_action
from governance.api.request_meta import client_ip_of, request_id_of
from governance.console import console_organization, console_roles, has_any_role

SESSION_KEY = "controlplane_bundles"
KEPT_PREVIEWS = 3  # previews kept in the session at once; older ones are dropped


def _role_list(roles) -> str:
    return " or ".join(str(role) for role in roles)


# --- who and where ----------------------------------------------------------------------


def principal_of(request) -> Principal:
    return Principal.of(request.user, console_roles(request))


def refusal_message(exc) -> str:
    """A service's refusal (a ``DomainError``) as a sentence for the page."""
    if exc.error == "forbidden":
        permission = exc.extra.get("required_permission", "")
        return f"Not allowed: this needs the {permission} permission." if permission else "Not allowed."
    return str(exc.error)


# --- lifecycle button states (hints; the service decides) -------------------------------


@dataclass(frozen=True)
class ActionState:
    allowed: bool
    reason: str = ""  # why the action is not available, in words a person understands


ALLOWED = ActionState(True)
NEEDS_LIFECYCLE_ROLE = ActionState(False, f"Needs the {_role_list(LIFECYCLE_ROLES)} role.")


def surface_action_states(request, versions: list[Surface]) -> dict[str, ActionState]:
    """Approve and deprecate, for a surface whose versions are ``versions`` (newest first)."""
    if not has_any_role(request, LIFECYCLE_ROLES):
        return {"approve": NEEDS_LIFECYCLE_ROLE, "deprecate": NEEDS_LIFECYCLE_ROLE}
    latest = versions[0]
    refusal = surface_approval_refusal(latest, principal_of(request))
    explanations = {
        "not_in_review": f"Only review versions can be approved; the latest version (v{latest.version}) is "
        f"{latest.status}.",
        "maker_checker": "You submitted this version: maker-checker needs someone else to approve it.",
        "not_owner": "Only a platform admin, or an approver who owns this surface (business or technical owner).",
    }
    approve = ALLOWED if refusal is None else ActionState(False, explanations[refusal.code])
    if any(v.status == SurfaceStatus.ACTIVE for v in versions):
        deprecate = ALLOWED
    else:
        deprecate = ActionState(False, "Only an active surface can be deprecated; no version is active.")
    return {"approve": approve, "deprecate": deprecate}


def profile_action_states(request, profile: Profile) -> dict[str, ActionState]:
    """Approve and deprecate one profile version."""
    if not has_any_role(request, LIFECYCLE_ROLES):
        return {"approve": NEEDS_LIFECYCLE_ROLE, "deprecate": NEEDS_LIFECYCLE_ROLE}
    approve = (
        ALLOWED
        if profile.status == ProfileStatus.REVIEW
        else ActionState(False, f"Only review versions can be approved; v{profile.version} is {profile.status}.")
    )
    deprecate = (
        ALLOWED
        if profile.status == ProfileStatus.ACTIVE
        else ActionState(False, f"Only active versions can be deprecated; v{profile.version} is {profile.status}.")
    )
    return {"approve": approve, "deprecate": deprecate}


def grant_action_states(request, grant) -> dict[str, ActionState]:
    """Suspend, revoke and reinstate, as the grant state machine allows from its status."""
    states = {}
    allowed_targets = GRANT_TRANSITIONS.get(grant.status, set())
    for action, target in GRANT_ACTIONS.items():
        if not has_any_role(request, LIFECYCLE_ROLES):
            states[action] = NEEDS_LIFECYCLE_ROLE
        elif target in allowed_targets:
            states[action] = ALLOWED
        elif not allowed_targets:
            states[action] = ActionState(False, f"The grant is {grant.status}; that is final.")
        else:
            states[action] = ActionState(False, f"The grant is already {grant.status}.")
    return states


# --- lifecycle forms --------------------------------------------------------------------


class ReasonForm(forms.Form):
    reason = forms.CharField(
        max_length=2000,
        widget=forms.Textarea(attrs={"rows": 2}),
        error_messages={"required": "Say why: the reason is recorded in the audit trail."},
    )


class SurfaceDeprecationForm(ReasonForm):
    successor_id = forms.CharField(
        required=False,
        max_length=255,
        label="Successor surface id",
        help_text="Optional: the surface that replaces this one.",
    )


class SurfaceApprovalForm(forms.Form):
    # The version the person saw: approval acts on the latest version, so a newer one
    # applied since the page was opened must be reviewed first.
    version = forms.IntegerField(min_value=1)


def form_error_text(form) -> str:
    return " ".join(str(error) for errors in form.errors.values() for error in errors)


# --- bundle upload ----------------------------------------------------------------------


class BundleForm(forms.Form):
    bundle_file = forms.FileField(required=False, label="YAML file")
    bundle_text = forms.CharField(
        required=False,
        label="or paste the bundle",
        strip=False,
        widget=forms.Textarea(attrs={"rows": 14, "spellcheck": "false", "class": "cp-code"}),
    )

    def clean(self):
        data = super().clean()
        upload, text = data.get("bundle_file"), data.get("bundle_text") or ""
        if upload and text.strip():
            raise forms.ValidationError("Choose a file or paste a bundle, not both.")
        if upload:
            if upload.size > MAX_BUNDLE_BYTES:
                raise forms.ValidationError(
                    f"The file is larger than the {MAX_BUNDLE_BYTES // (1024 * 1024)} MiB limit."
                )
            try:
                text = upload.read().decode("utf-8")
            except UnicodeDecodeError as exc:
                raise forms.ValidationError("The file is not UTF-8 text.") from exc
        if not text.strip():
            raise forms.ValidationError("Choose a YAML file or paste a bundle.")
        if len(text.encode("utf-8")) > MAX_BUNDLE_BYTES:
            raise forms.ValidationError(f"The bundle is larger than the {MAX_BUNDLE_BYTES // (1024 * 1024)} MiB limit.")
        data["bundle"] = text
        return data


def _remember_bundle(request, text: str, organization) -> str:
    """Keep the previewed bundle server-side, so Apply applies exactly what was previewed."""
    token = secrets.token_urlsafe(16)
    stored = dict(request.session.get(SESSION_KEY) or {})
    while len(stored) >= KEPT_PREVIEWS:
        stored.pop(next(iter(stored)))
    stored[token] = {
        "text": text,
        "sha256": hashlib.sha256(text.encode("utf-8")).hexdigest(),
        "organization": str(organization.pk),
    }
    request.session[SESSION_KEY] = stored
    return token


def _take_bundle(request, token: str, organization) -> str | None:
    """The previewed bundle for ``token``, once; ``None`` when unknown or expired."""
    stored = dict(request.session.get(SESSION_KEY) or {})
    item = stored.pop(token, None) if token else None
    request.session[SESSION_KEY] = stored
    if not item or item.get("organization") != str(organization.pk):
        return None
    if hashlib.sha256(item["text"].encode("utf-8")).hexdigest() != item.get("sha256"):
        return None
    return item["text"]


def _pretty(value) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=True, default=str)


# How the preview names a plan entry's decision_source.
DECISION_SOURCES = {
    "persisted_state": "existing declarations",
    "bundle_dependency": "this bundle",
    "validation": "validation",
}


def _presented_plan(plan) -> dict:
    """The plan as the preview page shows it: entries, diffs with readable values, warnings."""
    entries = []
    for entry in plan.as_dict()["entries"]:
        diff = entry.get("diff", {}).get("fields", [])
        entry["diff_rows"] = [
            {"field": row["field"], "before": _pretty(row["before"]), "after": _pretty(row["after"])} for row in diff
        ]
        entry["decided_from"] = DECISION_SOURCES.get(entry["decision_source"], entry["decision_source"])
        entries.append(entry)
    return {
        "entries": entries,
        "changed": [e for e in entries if e["diff_rows"]],
        "warnings": [dict(w, kind=e["kind"], id=e["id"]) for e in entries for w in e.get("warnings", [])],
        "would_apply": plan.would_apply,
        "create_count": plan.create_count,
        "conflict_count": plan.conflict_count,
        "invalid_count": plan.invalid_count,
        "unchanged_count": sum(e["action"] == "unchanged" for e in entries),
        "validation_errors": plan.validation_errors,
    }


def _apply_blocked_reason(plan) -> str:
    if plan.invalid_count:
        return (
            f"Fix the {plan.invalid_count} invalid document{'s' if plan.invalid_count != 1 else ''} first: "
            "apply writes nothing while any document is invalid."
        )
    if not plan.create_count:
        return "Nothing to apply: every document is unchanged or conflicts with what exists."
    return ""


def _result_links(results, organization) -> list[dict]:
    """Apply results, with a link to each created surface or profile version."""
    versioned = {Kind.SURFACE: Surface, Kind.PROFILE: Profile}
    rows = []
    for item in results:
        row = dict(item)
        model = versioned.get(item["kind"])
        if model is not None and item.get("version"):
            pk = (
                model.objects.filter(organization=organization, key=item["id"], version=item["version"])
                .values_list("pk", flat=True)
                .first()
            )
            if pk:
                row["url"] = reverse(f"admin:controlplane_{model._meta.model_name}_change", args=[pk])
        rows.append(row)
    return rows


def bundle_upload_view(model_admin, request):
    """Upload a bundle, preview its plan (entries, diff, warnings), then apply it."""
    context = {
        **model_admin.admin_site.each_context(request),
        "opts": model_admin.model._meta,
        "title": "Upload a bundle",
        "max_mib": MAX_BUNDLE_BYTES // (1024 * 1024),
        "apply_roles": _role_list(APPLY_ROLES),
    }
    template = "admin/controlplane/bundle_upload.html"
    organization = console_organization(request)
    if not has_any_role(request, APPLY_ROLES) or organization is None:
        context["forbidden"] = True
        return TemplateResponse(request, template, context, status=403)
    context["organization"] = organization

    if request.method == "POST" and request.POST.get("step") == "apply":
        return _apply(model_admin, request, organization, context, template)

    form = BundleForm(request.POST or None, request.FILES or None)
    if request.method == "POST" and form.is_valid():
        text = form.cleaned_data["bundle"]
        try:
            plan = plan_bundle(organization, text)
        except BundleSyntaxError as exc:
            form.add_error(None, f"This is not a bundle Mandate can read: {exc}.")
        else:
            context.update(
                step="preview",
                plan=_presented_plan(plan),
                apply_blocked=_apply_blocked_reason(plan),
                token=_remember_bundle(request, text, organization),
                bundle_text=text,
                bundle_bytes=len(text.encode("utf-8")),
                title="Preview bundle",
            )
            return TemplateResponse(request, template, context)
    context.update(step="upload", form=form)
    return TemplateResponse(request, template, context)


def _apply(model_admin, request, organization, context, template):
    text = _take_bundle(request, request.POST.get("token", ""), organization)
    if text is None:
        messages.warning(request, "That preview is no longer available. Upload the bundle again to preview it.")
        return redirect("admin:controlplane_bundle_upload")
    actor = request.user.get_username()
    body = text.encode("utf-8")
    audit = {
        "action": "apply.invoked",
        "actor_type": "user",
        "actor_id": actor,
        "organization_id": organization.pk,
        "target_type": "bundle",
        "request_id": request_id_of(request),
        "client_ip": client_ip_of(request),
        "required_permission": ApplyView.required_permission,
    }
    try:
        result = apply_bundle(organization, body, actor=actor)
    except BundleSyntaxError as exc:  # previewed fine, so only if parsing changed in between
        record_admin_action(
            **audit, outcome="failure", details={"bundle_bytes": len(body), "error": str(exc), "via": "admin"}
        )
        messages.error(request, f"This is not a bundle Mandate can read: {exc}.")
        return redirect("admin:controlplane_bundle_upload")
    record_admin_action(
        **audit,
        outcome="success" if result.written else "failure",
        details={"bundle_bytes": len(body), **result.counts(), "via": "admin"},
    )
    created = sum(item["status"] == "created" for item in result.results)
    if result.written:
        messages.success(request, f"Bundle applied: {created} created. New surface and profile versions await review.")
    else:
        messages.error(request, "Nothing was written: the bundle has invalid documents (see below).")
    context.update(
        step="applied",
        written=result.written,
        results=_result_links(result.results, organization),
        validation_errors=result.plan.validation_errors,
        title="Bundle applied" if result.written else "Bundle not applied",
    )
    return TemplateResponse(request, template, context)


def bundle_upload_url() -> str:
    return reverse("admin:controlplane_bundle_upload")
