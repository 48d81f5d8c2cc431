"""Held actions nobody decided in time: past ``expires_at``, the system decides ``timeout``
through the core (``ActionRules``: state ``expired``, envelope closed). Run by the beat task
``envelopes.gate_expire_approvals`` (``tasks.py``), as ``envelopes/requests/timeouts.py`` runs
agents' request timeouts: one held action per transaction, claimed with ``SELECT … FOR UPDATE
SKIP LOCKED``, so two sweeps never expire one twice and an operator deciding at that moment
wins (the sweep skips the row; the next finds it decided)."""

import logging

from django.db import transaction
from django.utils import timezone

from envelopes.choices import EnvelopeKind
from envelopes.models import GateApproval, GateApprovalState
from envelopes.services.decide import SYSTEM, Decision, decide

logger = logging.getLogger("mandate.gate")


def _claim_due(now, skipped: set) -> GateApproval | None:
    """Lock one pending held action past its expiry, skipping rows others hold."""
    return (
        GateApproval.objects.select_for_update(skip_locked=True, of=("self", "envelope"))
        .select_related("envelope")
        .filter(state=GateApprovalState.PENDING, expires_at__lte=now)
        .exclude(pk__in=skipped)
        .order_by("expires_at")
        .first()
    )


def expire_due(now=None) -> list[str]:
    """Expire every pending held action past ``expires_at``; returns their approval ids. One
    that fails is logged and left for the next sweep."""
    now = now or timezone.now()
    expired, skipped = [], set()
    while True:
        claimed = None
        try:
            with transaction.atomic():
                approval = _claim_due(now, skipped)
                if approval is None:
                    return expired
                claimed = approval.pk
                decide(
                    approval.envelope.organization_id,
                    approval.envelope_id,
                    SYSTEM,
                    Decision("timeout"),
                    kind=EnvelopeKind.ACTION,
                    now=now,
                )
                expired.append(approval.approval_id)
        except Exception:
            if claimed is None:
                raise
            logger.exception("gate: expiring a held action failed", extra={"envelope_id": str(claimed)})
            skipped.add(claimed)
