"""Celery tasks of the webhook outbox (``envelopes.delivery.webhooks`` holds the logic)."""

from celery import shared_task

from envelopes.delivery import webhooks


@shared_task(name="envelopes.deliver_webhook", ignore_result=True)
def deliver_webhook(delivery_id: str) -> str:
    """One attempt of one delivery; duplicates of the task are harmless (the row is claimed)."""
    return webhooks.deliver(delivery_id)


def queue_delivery(delivery_id: str, countdown: float | None = None) -> None:
    """Queue one attempt of one delivery (the outbox's queue, wired by ``EnvelopesConfig.ready``).

    No publish retries: with the broker down the caller (a committed decision) would wait
    for them; the outbox logs the failure and the sweeper re-sends the row."""
    deliver_webhook.apply_async((delivery_id,), countdown=countdown, retry=False)


@shared_task(name="envelopes.sweep_deliveries", ignore_result=True)
def sweep_deliveries() -> int:
    """Beat: re-enqueue pending deliveries whose task was lost."""
    return len(webhooks.sweep())
