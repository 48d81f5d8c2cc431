"""Redeeming a verified seal for one rerun, once per (principal, seal_id) (GBX's
``/api/entitlement/redeem_seal_once``).

The seal is verified first (no lock held); then one transaction records the redemption —
the unique constraint on (organization, principal, seal_id) makes a second attempt, also a
parallel one, fail — and adds one run to the redeemer's balance under the sealed run's plan.
A redeemer with no balance under that plan gets one, expiring with the sealed entitlement
or ``MANDATE_GBX_RERUN_DAYS`` from now, whichever is later."""

from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone

from entitlements.choices import EntitlementKind, EntitlementStatus, RunEvent
from entitlements.models import Entitlement, Run, SealRedemption
from entitlements.services.evidence import record_entitlement_step
from entitlements.services.holders import Holder
from entitlements.services.issuance import new_entitlement_id
from evidence.seals import SealVerification, verify_seal
from governance.errors import Conflict, Invalid


@dataclass(frozen=True)
class Redemption:
    entitlement: Entitlement
    runs_remaining: int
    seal_id: str


class SealNotValid(Invalid):
    """The seal did not verify; ``verification`` says which checks failed."""

    def __init__(self, verification: SealVerification, message: str | None = None):
        super().__init__(message or f"the seal is {verification.status}", code="seal_invalid")
        self.verification = verification


def redeem_seal_once(holder: Holder, svg: bytes) -> Redemption:
    verification = verify_seal(svg)
    if not verification.valid:
        raise SealNotValid(verification)
    seal_id = verification.seal_id
    sealed = (
        Run.objects.filter(organization_id=holder.organization_id, seal_id=seal_id)
        .select_related("entitlement")
        .first()
    )
    if sealed is None:
        raise SealNotValid(verification, "the seal is valid but was not issued for a run of this organization")
    plan_id = sealed.entitlement.plan_id
    now = timezone.now()
    expires_at = max(sealed.entitlement.expires_at or now, now + timedelta(days=settings.MANDATE_GBX_RERUN_DAYS))
    for _attempt in range(2):
        try:
            with transaction.atomic():
                target = _balance(holder, plan_id, expires_at)
                try:
                    with transaction.atomic():
                        SealRedemption.objects.create(
                            organization_id=holder.organization_id,
                            principal=holder.principal,
                            seal_id=seal_id,
                            entitlement=target,
                            sealed_run=sealed,
                        )
                except IntegrityError:
                    raise Conflict(
                        "this seal was already redeemed by this principal", code="seal_already_redeemed"
                    ) from None
                Entitlement.objects.filter(pk=target.pk).update(
                    runs_total=F("runs_total") + 1, runs_remaining=F("runs_remaining") + 1, updated_at=now
                )
                target.refresh_from_db(fields=["runs_total", "runs_remaining"])
                record_entitlement_step(
                    holder,
                    target.entitlement_id,
                    RunEvent.REDEEMED,
                    {
                        "entitlement_id": target.entitlement_id,
                        "principal": holder.principal,
                        "seal_id": seal_id,
                        "sealed_run_id": sealed.run_id,
                        "runs_remaining": target.runs_remaining,
                    },
                )
                return Redemption(target, target.runs_remaining, seal_id)
        except IntegrityError:
            continue  # the redeemer's balance was created in parallel: use it
    raise Conflict("the redemption could not be recorded; try again", code="retry")


def _balance(holder: Holder, plan_id: str, expires_at) -> Entitlement:
    """The redeemer's runs balance under ``plan_id`` (locked), created when absent."""
    found = (
        Entitlement.objects.select_for_update()
        .filter(
            organization_id=holder.organization_id,
            kind=EntitlementKind.RUNS,
            principal=holder.principal,
            plan_id=plan_id,
        )
        .first()
    )
    if found is None:
        return Entitlement.objects.create(
            entitlement_id=new_entitlement_id(),
            organization_id=holder.organization_id,
            kind=EntitlementKind.RUNS,
            principal=holder.principal,
            plan_id=plan_id,
            runs_total=0,
            runs_remaining=0,
            expires_at=expires_at,
            issued_by="seal redemption",
        )
    if found.expires_at is not None and found.expires_at < expires_at:
        found.expires_at = expires_at
        found.entitlement_status = EntitlementStatus.ACTIVE
        found.save(update_fields=["expires_at", "entitlement_status", "updated_at"])
    return found
