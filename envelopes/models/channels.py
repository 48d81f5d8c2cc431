import uuid

from django.db import models

from envelopes.choices import ChannelStatus


class ChannelInvite(models.Model):
    """A single-use invitation for an agent to register a channel, bound to the person who
    made it (the channel's owner). Only a hash of the token is kept."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    organization = models.ForeignKey("governance.Organization", on_delete=models.CASCADE, related_name="+")
    owner = models.ForeignKey("governance.Person", on_delete=models.CASCADE, related_name="channel_invites")
    token_hash = models.CharField(max_length=64, unique=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField()
    used_at = models.DateTimeField(null=True, blank=True)
    channel = models.OneToOneField(
        "envelopes.Channel", null=True, blank=True, on_delete=models.SET_NULL, related_name="invite"
    )

    class Meta:
        ordering = ["-created_at"]

    def __str__(self):
        return f"invite by {self.owner} (expires {self.expires_at:%Y-%m-%d %H:%M})"


class Channel(models.Model):
    """An agent's channel to people: it submits requests with its API key and receives
    decisions by long-poll and signed webhooks. The key is stored hashed; the webhook
    secret is encrypted at rest, because signing needs it back."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    organization = models.ForeignKey("governance.Organization", on_delete=models.CASCADE, related_name="+")
    owner = models.ForeignKey("governance.Person", on_delete=models.PROTECT, related_name="channels")
    agent = models.ForeignKey(
        "controlplane.Agent", null=True, blank=True, on_delete=models.SET_NULL, related_name="channels"
    )
    name = models.CharField(max_length=200)
    key_prefix = models.CharField(max_length=16, unique=True, editable=False)
    key_hash = models.CharField(max_length=64, editable=False)
    webhook_secret_encrypted = models.TextField(editable=False)
    webhook_disabled = models.BooleanField(default=False, help_text="Set when a receiver answers 410 Gone.")
    status = models.CharField(max_length=10, choices=ChannelStatus.choices, default=ChannelStatus.ACTIVE)
    created_at = models.DateTimeField(auto_now_add=True)
    key_rotated_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["name"]

    def __str__(self):
        return self.name
