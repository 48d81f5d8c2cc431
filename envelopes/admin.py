"""The admin Django discovers for envelopes: the inbox (envelopes, channels, invites, requests,
and the admin index replaced by the inbox) and the webhook deliveries (``/admin/webhooks``)."""

from envelopes.delivery import admin as delivery_admin  # noqa: F401
from envelopes.inbox import admin as inbox_admin  # noqa: F401
