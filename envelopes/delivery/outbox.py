"""The webhook outbox: a delivery row written in the decision's transaction, then a task.

The outbox sits below the code that sends (``envelopes.delivery.tasks`` and ``webhooks``, which
re-queues through ``dispatch``), so it does not import it: ``EnvelopesConfig.ready`` hands it
the function that queues one delivery (``use_queue``).
"""

import json
import logging
from collections.abc import Callable

from django.core.exceptions import ImproperlyConfigured
from django.db import transaction
from django.utils import timezone

from envelopes.choices import ReturnMode
from envelopes.models import ApprovalRequest, Delivery

logger = logging.getLogger(__name__)

# Queues one attempt of one delivery: ``queue(delivery_id, countdown)``.
Queue = Callable[[str, float | None], None]
_queue: Queue | None = None


def use_queue(queue: Queue) -> None:
    """Send deliveries through ``queue`` from now on (wired once, at startup)."""
    global _queue
    _queue = queue


def wants_webhook(request: ApprovalRequest) -> bool:
    return (
        request.return_mode in (ReturnMode.WEBHOOK, ReturnMode.BOTH)
        and bool(request.return_webhook)
        and not request.channel.webhook_disabled
    )


def enqueue_delivery(request: ApprovalRequest, event: str, payload: dict) -> Delivery | None:
    """Queue ``payload`` for the request's return_webhook, if it has one; sent after commit."""
    if not wants_webhook(request):
        return None
    body = json.dumps(payload, separators=(",", ":"), ensure_ascii=False)
    delivery = Delivery.objects.create(
        channel=request.channel,
        request=request,
        event=event,
        url=request.return_webhook,
        body=body,
        next_attempt_at=timezone.now(),
    )
    delivery_id = str(delivery.pk)
    transaction.on_commit(lambda: dispatch(delivery_id))
    return delivery


def dispatch(delivery_id: str, *, countdown: float | None = None) -> None:
    """Hand the delivery to a worker. The row is the source of truth: when the broker is
    unreachable the send is only late (the sweeper re-enqueues due rows), so a broker
    failure must not turn a committed decision into an error."""
    if _queue is None:
        raise ImproperlyConfigured("the webhook outbox has no queue: EnvelopesConfig.ready wires it")
    try:
        _queue(delivery_id, countdown)
    except Exception:
        logger.warning("webhook task not queued; the sweeper will send it", extra={"delivery_id": delivery_id})


def enqueue_deliveries(items) -> list[Delivery]:
    """The core decision path's outbox (``decide.connect_outbox``): one row per
    ``(request, event, payload)`` whose request wants a webhook, written in bulk in the
    decision's transaction and handed to workers after the commit."""
    now = timezone.now()
    deliveries = [
        Delivery(
            channel=request.channel,
            request=request,
            event=event,
            url=request.return_webhook,
            body=json.dumps(payload, separators=(",", ":"), ensure_ascii=False),
            next_attempt_at=now,
        )
        for request, event, payload in items
        if wants_webhook(request)
    ]
    if deliveries:
        Delivery.objects.bulk_create(deliveries)
        ids = [str(delivery.pk) for delivery in deliveries]
        transaction.on_commit(lambda: [dispatch(delivery_id) for delivery_id in ids])
    return deliveries
