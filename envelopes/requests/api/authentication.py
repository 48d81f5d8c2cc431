"""Agent channel keys: ``Authorization: Bearer mdc_...`` (AIOS Govern's agent API key).

A channel key authenticates a channel, not a person: the user is anonymous, the credential
carries no roles (so no role-gated API opens to it) and names the channel's organization.
Channel views require it with ``IsChannel`` and read the channel with ``channel_of``.
"""

from django.contrib.auth.models import AnonymousUser
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import authentication, exceptions, permissions

from envelopes.models import Channel
from envelopes.requests.channels import KEY_SCHEME, authenticate_channel_key
from governance.api.authentication import Credential
from governance.api.permissions import credential_of

CREDENTIAL_KIND = "channel"
INVALID_KEY = "invalid or revoked channel key"


def channel_key_from_header(header: str) -> str | None:
    """The channel key in an ``Authorization`` header value; None for anything else."""
    scheme, _, secret = (header or "").partition(" ")
    secret = secret.strip()
    if scheme.lower() != "bearer" or not secret.startswith(f"{KEY_SCHEME}_"):
        return None
    return secret


def channel_credential(channel: Channel) -> Credential:
    return Credential(
        kind=CREDENTIAL_KIND,
        subject_id=str(channel.pk),
        roles=frozenset(),
        organization_id=str(channel.organization_id),
        credential_id=channel.key_prefix,
    )


class ChannelKeyAuthentication(authentication.BaseAuthentication):
    """``Authorization: Bearer mdc_...`` — an agent channel's API key."""

    def authenticate(self, request):
        header = authentication.get_authorization_header(request).decode("latin-1")
        key = channel_key_from_header(header)
        if key is None:
            return None  # not a channel key; another authenticator may know it
        channel = authenticate_channel_key(key)
        if channel is None:
            raise exceptions.AuthenticationFailed(INVALID_KEY)
        request._request.mandate_channel = channel
        return AnonymousUser(), channel_credential(channel)

    def authenticate_header(self, request):
        return 'Bearer realm="mandate"'


def channel_of(request) -> Channel | None:
    credential = credential_of(request)
    if credential is None or credential.kind != CREDENTIAL_KIND:
        return None
    return getattr(request._request, "mandate_channel", None)


class IsChannel(permissions.BasePermission):
    """Only an agent channel's key: anything else (no credential, a person's token) is 401."""

    def has_permission(self, request, view):
        if channel_of(request) is None:
            raise exceptions.NotAuthenticated()
        return True


class ChannelKeyScheme(OpenApiAuthenticationExtension):
    target_class = "envelopes.requests.api.authentication.ChannelKeyAuthentication"
    name = "channelKey"

    def get_security_definition(self, auto_schema):
        return {
            "type": "http",
            "scheme": "bearer",
            "description": "An agent channel's API key (mdc_...), returned once by POST /api/register-channel.",
        }

    def get_security_requirement(self, auto_schema):
        # Listed only where a channel key is the way in; elsewhere it authenticates but
        # carries no roles, so offering it would mislead.
        if any(issubclass(p, IsChannel) for p in getattr(auto_schema.view, "permission_classes", ())):
            return {self.name: []}
        return None
