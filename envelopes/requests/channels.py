"""Agent channels: invites, registration, keys (hashed) and webhook secrets (encrypted)."""

import base64
import secrets
from datetime import timedelta

from django.db import transaction
from django.utils import timezone

from controlplane.models import Agent
from envelopes.choices import ChannelStatus, RequestStatus
from envelopes.models import Channel, ChannelInvite
from envelopes.requests import bus
from evidence.encryption import decrypt_at_rest, encrypt_at_rest
from governance.errors import Gone, Invalid
from governance.secret_hashing import hash_secret, secret_matches

INVITE_TTL = timedelta(days=7)
KEY_SCHEME = "mdc"
INVITE_SCHEME = "mdi"


def create_invite(owner, *, ttl: timedelta = INVITE_TTL) -> tuple[ChannelInvite, str]:
    """A single-use invite token bound to ``owner``; the token is returned once."""
    token = f"{INVITE_SCHEME}_{secrets.token_urlsafe(24)}"
    invite = ChannelInvite.objects.create(
        organization=owner.organization, owner=owner, token_hash=hash_secret(token), expires_at=timezone.now() + ttl
    )
    return invite, token


def _new_key() -> tuple[str, str, str]:
    prefix = secrets.token_hex(6)
    key = f"{KEY_SCHEME}_{prefix}_{secrets.token_urlsafe(32)}"
    return key, prefix, hash_secret(key)


def new_webhook_secret() -> str:
    """Standard Webhooks form: ``whsec_`` + base64 of 32 random bytes."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


@transaction.atomic
def register_channel(invite_token: str, *, name: str = "", agent_id: str = "") -> tuple[Channel, str, str]:
    """Redeem an invite: a new channel, its API key and webhook secret (both shown once)."""
    invite = (
        ChannelInvite.objects.select_for_update()
        .select_related("owner")
        .filter(token_hash=hash_secret(invite_token or ""))
        .first()
    )
    if invite is None:
        raise Invalid("invite_token is not valid")
    if invite.used_at is not None:
        raise Gone("invite_token has already been used")
    if invite.expires_at <= timezone.now():
        raise Gone("invite_token has expired")
    agent = None
    if agent_id:
        agent = Agent.objects.filter(organization=invite.organization, key=agent_id).first()
        if agent is None:
            raise Invalid(f"agent {agent_id!r} is not declared", field="agent_id")
    key, prefix, key_hash = _new_key()
    secret = new_webhook_secret()
    channel = Channel.objects.create(
        organization=invite.organization,
        owner=invite.owner,
        agent=agent,
        name=(name or "").strip()[:200] or f"{invite.owner.get_username()}'s agent",
        key_prefix=prefix,
        key_hash=key_hash,
        webhook_secret_encrypted=encrypt_at_rest(secret.encode()),
    )
    invite.used_at = timezone.now()
    invite.channel = channel
    invite.save(update_fields=["used_at", "channel"])
    return channel, key, secret


def authenticate_channel_key(key: str) -> Channel | None:
    """The active channel this key belongs to, compared in constant time; None otherwise."""
    parts = (key or "").split("_", 2)
    if len(parts) != 3 or parts[0] != KEY_SCHEME:
        return None
    channel = Channel.objects.select_related("owner", "organization").filter(key_prefix=parts[1]).first()
    if not secret_matches(key, channel.key_hash if channel else None):
        return None
    if channel.status != ChannelStatus.ACTIVE:
        return None
    return channel


@transaction.atomic
def rotate_channel_key(channel: Channel) -> str:
    key, prefix, key_hash = _new_key()
    channel.key_prefix, channel.key_hash, channel.key_rotated_at = prefix, key_hash, timezone.now()
    channel.save(update_fields=["key_prefix", "key_hash", "key_rotated_at"])
    return key


@transaction.atomic
@transaction.atomic
def revoke_channel(channel: Channel) -> Channel:
    """Revoke the channel's key. Its agent's waits end at once (401, as a revoked key gets):
    every pending request's waiters are woken after the commit and see the revocation."""
    channel.status = ChannelStatus.REVOKED
    channel.save(update_fields=["status"])
    pending = [str(pk) for pk in channel.requests.filter(status=RequestStatus.PENDING).values_list("pk", flat=True)]
    transaction.on_commit(lambda: bus.publish_many(pending))
    return channel


def webhook_secret(channel: Channel) -> str:
    return decrypt_at_rest(channel.webhook_secret_encrypted).decode()
