"""Timeouts of agents' requests: once ``expires_at`` passes, a pending request gets its
``on_timeout`` applied by the system (the beat task ``envelopes.apply_timeouts``).

- ``auto_approve`` → approved, ``auto_reject`` → rejected, ``expire`` → expired, each through
  ``decisions.system_decision`` (the same finalize path as people's decisions: evidence,
  webhook, long-poll waiters), attributed to ``system``.
- ``escalate`` → one rung up the ladder (``decisions.next_escalation_level``: the owner's
  manager, then any platform.admin) with a fresh expiry of the request's original TTL; when
  the admins' turn times out too, the request expires.

Every application appends ``TIMEOUT_APPLIED`` to the envelope's chain. Each request is
claimed in its own short transaction with ``SELECT … FOR UPDATE SKIP LOCKED``, so two
sweeps running at once never apply the same timeout twice, and a person deciding at that
moment simply wins (the sweep skips the row; the next sweep finds it decided).
"""

import json
import logging
from datetime import UTC, timedelta

from django.db import transaction
from django.utils import timezone

from envelopes.choices import OnTimeout, RequestStatus
from envelopes.models import ApprovalRequest
from envelopes.requests import decisions
from evidence.services.chain import EventDraft
from governance.timestamps import parse_iso_timestamp, rfc3339_isoformat

logger = logging.getLogger(__name__)

TIMEOUT_STATUS = {
    OnTimeout.AUTO_APPROVE: RequestStatus.APPROVED,
    OnTimeout.AUTO_REJECT: RequestStatus.REJECTED,
    OnTimeout.EXPIRE: RequestStatus.EXPIRED,
    OnTimeout.ESCALATE: RequestStatus.EXPIRED,  # the ladder's end
}
# An escalated rung never gets less than this, whatever the agent's TTL was.
MIN_ESCALATION_TTL = timedelta(minutes=1)


def original_ttl(request: ApprovalRequest) -> timedelta:
    """The time the agent gave people: its submitted ``expires_at`` minus the submission time.
    (The column moves with each escalation; the submitted envelope does not.)"""
    envelope = request.envelope
    try:
        submitted = json.loads(envelope.submitted_raw)["expires_at"]
        expires_at = parse_iso_timestamp(submitted).astimezone(UTC)
    except (ValueError, TypeError, KeyError, AttributeError):
        expires_at = request.expires_at
    return max(expires_at - envelope.received_at, MIN_ESCALATION_TTL)


def _claim_due(now, skipped: set) -> ApprovalRequest | None:
    """Lock one due, pending request and its envelope, skipping rows others hold."""
    return (
        ApprovalRequest.objects.select_for_update(skip_locked=True, of=("self", "envelope"))
        .select_related("envelope", "channel", "channel__owner")
        .filter(status=RequestStatus.PENDING, expires_at__lte=now)
        .exclude(pk__in=skipped)
        .order_by("expires_at")
        .first()
    )


def apply_timeout(request: ApprovalRequest, now) -> str:
    """Apply ``on_timeout`` to a locked, pending, expired request; returns what happened
    (``escalated`` or the final status)."""
    action = request.on_timeout or OnTimeout.EXPIRE
    expired_at = request.expires_at
    applied = {"on_timeout": action, "expires_at": expired_at, "escalation_level": request.escalation_level}
    level = decisions.next_escalation_level(request) if action == OnTimeout.ESCALATE else None
    if level is not None:
        expires_at = now + original_ttl(request)
        event = {**applied, "outcome": "escalated", "new_escalation_level": level, "new_expires_at": expires_at}
        decisions.system_reroute(
            request, level, expires_at, [EventDraft("TIMEOUT_APPLIED", event, *decisions.SYSTEM_PERFORMER)]
        )
        return "escalated"
    status = TIMEOUT_STATUS[action]
    if action == OnTimeout.ESCALATE:
        reason = "timed out after escalating to the administrators: expired"
    else:
        reason = f"timed out at {rfc3339_isoformat(expired_at)}: on_timeout {action}"
    event = {**applied, "outcome": status}
    decisions.system_decision(
        request, status, reason, preceding=[EventDraft("TIMEOUT_APPLIED", event, *decisions.SYSTEM_PERFORMER)]
    )
    return status


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
