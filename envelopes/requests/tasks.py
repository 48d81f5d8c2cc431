"""Celery beat task applying agents' request timeouts (``envelopes.requests.timeouts``).

A module of its own (not ``envelopes.delivery.tasks``, the webhook outbox's); ``governance.celery``
autodiscovers it by name."""

from celery import shared_task

from envelopes.requests import timeouts


@shared_task(name="envelopes.apply_timeouts", ignore_result=True)
def apply_timeouts() -> int:
    """Beat (every 15 s): apply ``on_timeout`` to every pending request past its expiry."""
    return len(timeouts.apply_timeouts())
