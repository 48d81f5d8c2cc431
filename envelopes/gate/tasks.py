"""Celery beat task expiring held actions nobody decided in time (``expiry.expire_due``).
``governance.celery`` autodiscovers it by name."""

from celery import shared_task

from envelopes.gate import expiry


@shared_task(name="envelopes.gate_expire_approvals", ignore_result=True)
def expire_approvals() -> int:
    """Beat (every 15 s): expire every pending held action past its ``expires_at``."""
    return len(expiry.expire_due())
