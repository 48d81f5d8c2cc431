"""The Agents page (``/agents``): the signed-in person's agent channels, a **New invite URL**
button, and key rotation and revocation for channel owners (and platform admins).

A secret — an invite token, a rotated API key — is shown once, in the answer to the POST that
made it, and never stored in the session or shown again. Every change is a service call in
``envelopes.requests.channels``, recorded in the admin audit trail.
"""

import json
from dataclasses import dataclass

from django.conf import settings
from django.contrib import admin, messages
from django.contrib.admin.views.decorators import staff_member_required
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import Count, Q
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils import timezone

from envelopes.choices import ChannelStatus, RequestStatus
from envelopes.models import Channel, ChannelInvite
from envelopes.requests.channels import create_invite, revoke_channel, rotate_channel_key
from evidence.services.audit_trails import record_admin_action
from governance.api.request_meta import client_ip_of, request_id_of
from governance.choices import Role
from governance.console import console_roles

RECENT_INVITES = 10


def may_manage(person, roles, channel: Channel) -> bool:
    """Owners manage their channels; platform admins manage every channel of their organization."""
    if channel.organization_id != person.organization_id:
        return False
    return channel.owner_id == person.pk or Role.PLATFORM_ADMIN in roles


def register_command(token: str) -> str:
    body = json.dumps({"invite_token": token})
    return (
        f"curl -X POST {settings.PUBLIC_BASE_URL}/api/register-channel -H 'Content-Type: application/json' -d '{body}'"
    )


@dataclass
class Secret:
    """What one POST made, shown once."""

    kind: str  # invite | key
    value: str
    command: str
    expires_at: object = None
    channel: Channel | None = None


def _channels(queryset):
    waiting = Count("requests", filter=Q(requests__status=RequestStatus.PENDING))
    return list(queryset.select_related("owner", "agent").annotate(waiting=waiting).order_by("name"))


def _audit(request, action: str, target_type: str, target_id: str, **details) -> None:
    record_admin_action(
        action=action,
        actor_type="user",
        actor_id=request.user.get_username(),
        organization_id=request.user.organization_id,
        target_type=target_type,
        target_id=target_id,
        request_id=request_id_of(request),
        client_ip=client_ip_of(request),
        details={**details, "via": "agents_page"},
    )


def _own_channel(person, channel_id: str) -> Channel | None:
    """The channel of the person's organization with this id; None for anything else (an id
    that is not a UUID is refused by the key's own field)."""
    try:
        return (
            Channel.objects.select_related("owner")
            .filter(pk=channel_id, organization_id=person.organization_id)
            .first()
        )
    except ValidationError:
        return None


def _post(request, roles) -> Secret | None:
    """New invite, key rotation or revocation; a Secret when there is one to show."""
    person = request.user
    action = request.POST.get("action", "")
    if action == "invite":
        invite, token = create_invite(person)
        expires = invite.expires_at.isoformat()
        _audit(request, "channel.invite_created", "channel_invite", str(invite.pk), expires_at=expires)
        return Secret("invite", token, register_command(token), expires_at=invite.expires_at)
    channel = _own_channel(person, request.POST.get("channel", ""))
    if channel is None or action not in ("rotate", "revoke"):
        messages.error(request, "Nothing changed: that channel or action is unknown.")
        return None
    if not may_manage(person, roles, channel):
        raise PermissionDenied
    if channel.status != ChannelStatus.ACTIVE:
        messages.error(request, f"Nothing changed: “{channel.name}” is revoked; a revoked channel stays revoked.")
        return None
    if action == "rotate":
        key = rotate_channel_key(channel)
        _audit(request, "channel.key_rotated", "channel", str(channel.pk))
        command = f"Authorization: Bearer {key}"
        return Secret("key", key, command, channel=channel)
    revoke_channel(channel)
    _audit(request, "channel.revoked", "channel", str(channel.pk))
    messages.success(
        request, f"“{channel.name}” is revoked: its key stops working now and its waiting requests stay in the inbox."
    )
    return None


@staff_member_required
def agents_page(request):
    person = request.user
    roles = console_roles(request)
    organization = person.organization
    secret = None
    if request.method == "POST":
        if organization is None:
            raise PermissionDenied
        secret = _post(request, roles)
        if secret is None:
            return redirect("agents")
    is_admin = Role.PLATFORM_ADMIN in roles
    mine = _channels(Channel.objects.filter(owner=person)) if organization else []
    others = (
        _channels(Channel.objects.filter(organization=organization).exclude(owner=person))
        if organization and is_admin
        else []
    )
    invites = list(ChannelInvite.objects.filter(owner=person).select_related("channel")[:RECENT_INVITES])
    now = timezone.now()
    context = {
        **admin.site.each_context(request),
        "title": "Agents",
        "organization": organization,
        "mine": mine,
        "others": others,
        "is_admin": is_admin,
        "invites": invites,
        "now": now,
        "secret": secret,
        "public_base_url": settings.PUBLIC_BASE_URL,
        "inbox_url": reverse("admin:index"),
        "requests_url": reverse("admin:envelopes_approvalrequest_changelist"),
    }
    response = TemplateResponse(request, "agents/agents.html", context)
    if secret is not None:
        response["Cache-Control"] = "no-store"  # the secret is in this page only
    return response
