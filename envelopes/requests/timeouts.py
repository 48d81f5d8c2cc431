"""Timeouts of agents' requests: once ``expires_at`` passes, a pending request gets its
``on_timeout`` applied by the system (the beat task ``envelopes.apply_timeouts``), through
the core's one decision path (``decisions.RequestRules`` holds what each timeout does:
``auto_approve``, ``auto_reject``, ``expire``, or one rung up the ``escalate`` ladder).

Each request is claimed in its own short transaction with ``SELECT … FOR UPDATE SKIP
LOCKED``, so two sweeps running at once never apply the same timeout twice, and a person
deciding at that moment simply wins (the sweep skips the row; the next sweep finds it
decided).
"""

import logging

from django.db import transaction
from django.utils import timezone

from envelopes.choices import RequestStatus
from envelopes.models import ApprovalRequest
from envelopes.requests.decisions import apply_timeout

logger = logging.getLogger(__name__)


def _claim_due(now, skipped: set) -> ApprovalRequest | None:
    """Lock one due, pending request and its envelope, skipping rows others hold."""
    return (
        ApprovalRequest.objects.select_for_update(skip_locked=True, of=("self", "envelope"))
        .select_related("envelope", "channel")
        .filter(status=RequestStatus.PENDING, expires_at__lte=now)
        .exclude(pk__in=skipped)
        .order_by("expires_at")
        .first()
    )


def apply_timeouts(now=None) -> list[tuple[str, str]]:
    """Apply every due timeout, one request per transaction; returns (request_id, outcome)
    pairs. A request that fails is logged and left for the next sweep."""
    now = now or timezone.now()
    applied, skipped = [], set()
    while True:
        request_id = None
        try:
            with transaction.atomic():
                request = _claim_due(now, skipped)
                if request is None:
                    return applied
                request_id = request.pk
                applied.append((str(request_id), apply_timeout(request, now)))
        except Exception:
            if request_id is None:
                raise  # the claim itself failed (the database is away): nothing to skip
            logger.exception("applying a timeout failed", extra={"request_id": str(request_id)})
            skipped.add(request_id)
