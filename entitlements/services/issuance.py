"""Issuing entitlements: runs to a principal under a plan (GBX's ``/api/entitlement/issue``),
and status entitlements (a subscription an organization's holder is in or not)."""

from datetime import datetime

from django.db import IntegrityError, transaction
from django.utils import timezone

from entitlements.choices import EntitlementKind, EntitlementStatus, RunEvent
from entitlements.models import Entitlement
from entitlements.services.evidence import record_entitlement_step
from entitlements.services.holders import Holder, plan_id_value, principal_value
from evidence.ids import uuid7_hex
from governance.errors import Invalid
from governance.install_ports import HeldEntitlement
from governance.timestamps import rfc3339_isoformat

MAX_RUNS_PER_ISSUE = 1_000_000


def new_entitlement_id() -> str:
    return f"ent_{uuid7_hex()}"


def issue_runs(organization_id, *, principal, plan_id, runs_total, expires_at: datetime, issued_by: str) -> Entitlement:
    """``runs_total`` more runs for ``principal`` under ``plan_id``. One balance per principal
    and plan: issuing again adds the runs to it (total and remaining) and keeps the later
    expiry."""
    principal = principal_value(principal)
    plan_id = plan_id_value(plan_id)
    if isinstance(runs_total, bool) or not isinstance(runs_total, int) or not 1 <= runs_total <= MAX_RUNS_PER_ISSUE:
        raise Invalid(f"must be an integer from 1 to {MAX_RUNS_PER_ISSUE}", field="runs_total")
    if expires_at <= timezone.now():
        raise Invalid("must be in the future", field="expires_at")
    holder = Holder(str(organization_id), principal, "issuer")
    for _attempt in range(2):
        try:
            with transaction.atomic():
                entitlement = _add_runs(organization_id, principal, plan_id, runs_total, expires_at, issued_by)
                record_entitlement_step(
                    Holder(holder.organization_id, issued_by or "issuer", "issuer"),
                    entitlement.entitlement_id,
                    RunEvent.ISSUED,
                    {
                        "entitlement_id": entitlement.entitlement_id,
                        "principal": principal,
                        "plan_id": plan_id,
                        "runs_added": runs_total,
                        "runs_total": entitlement.runs_total,
                        "runs_remaining": entitlement.runs_remaining,
                        "expires_at": rfc3339_isoformat(entitlement.expires_at),
                    },
                )
                return entitlement
        except IntegrityError:
            continue  # another issue created the balance first: add to it
    raise Invalid("the entitlement could not be issued; try again")


def _add_runs(organization_id, principal, plan_id, runs, expires_at, issued_by) -> Entitlement:
    entitlement = (
        Entitlement.objects.select_for_update()
        .filter(organization_id=organization_id, kind=EntitlementKind.RUNS, principal=principal, plan_id=plan_id)
        .first()
    )
    if entitlement is None:
        return Entitlement.objects.create(
            entitlement_id=new_entitlement_id(),
            organization_id=organization_id,
            kind=EntitlementKind.RUNS,
            principal=principal,
            plan_id=plan_id,
            runs_total=runs,
            runs_remaining=runs,
            expires_at=expires_at,
            issued_by=issued_by,
        )
    entitlement.runs_total += runs
    entitlement.runs_remaining += runs
    if entitlement.expires_at is None or expires_at > entitlement.expires_at:
        entitlement.expires_at = expires_at
    entitlement.entitlement_status = EntitlementStatus.ACTIVE
    entitlement.save(update_fields=["runs_total", "runs_remaining", "expires_at", "entitlement_status", "updated_at"])
    return entitlement


def set_status_entitlement(
    organization_id, *, principal, plan_id, status: str, expires_at: datetime | None, issued_by: str
) -> Entitlement:
    """A status entitlement (``active``, ``inactive``, ``expired``) for a holder under a plan,
    created or changed; its evidence says what changed."""
    principal = principal_value(principal)
    plan_id = plan_id_value(plan_id)
    if status not in EntitlementStatus.values:
        raise Invalid(f"must be one of {', '.join(EntitlementStatus.values)}", field="entitlement_status")
    with transaction.atomic():
        entitlement, created = Entitlement.objects.select_for_update().get_or_create(
            organization_id=organization_id,
            kind=EntitlementKind.STATUS,
            principal=principal,
            plan_id=plan_id,
            defaults={
                "entitlement_id": new_entitlement_id(),
                "entitlement_status": status,
                "expires_at": rfc3339_isoformat(expires_at),
                "issued_by": issued_by,
            },
        )
        if not created:
            entitlement.entitlement_status, entitlement.expires_at = status, expires_at
            entitlement.save(update_fields=["entitlement_status", "expires_at", "updated_at"])
        record_entitlement_step(
            Holder(str(organization_id), issued_by or "issuer", "issuer"),
            entitlement.entitlement_id,
            "GBX_ENTITLEMENT_STATUS_SET",
            {
                "entitlement_id": entitlement.entitlement_id,
                "principal": principal,
                "plan_id": plan_id,
                "entitlement_status": status,
                "expires_at": rfc3339_isoformat(expires_at),
            },
        )
    return entitlement


def status_of(organization_id, principal: str, plan_id: str) -> str:
    """A holder's status under a plan: ``active``, ``inactive`` (none, or set so) or
    ``expired`` (set so, or past its expiry)."""
    return held_status_entitlement(organization_id, principal, plan_id).status


def held_status_entitlement(organization_id, principal: str, plan_id: str) -> HeldEntitlement:
    """A holder's status entitlement under a plan: its id ("" when none) and status."""
    entitlement = Entitlement.objects.filter(
        organization_id=organization_id,
        kind=EntitlementKind.STATUS,
        principal=principal_value(principal),
        plan_id=plan_id,
    ).first()
    if entitlement is None:
        return HeldEntitlement("", EntitlementStatus.INACTIVE)
    return HeldEntitlement(entitlement.entitlement_id, entitlement.status)


def held_status_entitlements(holders: list[tuple[str, str]], plan_id: str) -> dict[tuple[str, str], HeldEntitlement]:
    """``held_status_entitlement`` of several (organization id, holder) pairs in one query, by
    the pairs as given."""
    keys = {
        (organization_id, holder): (str(organization_id), principal_value(holder))
        for organization_id, holder in holders
    }
    found = {
        (str(entitlement.organization_id), entitlement.principal): HeldEntitlement(
            entitlement.entitlement_id, entitlement.status
        )
        for entitlement in Entitlement.objects.filter(
            kind=EntitlementKind.STATUS,
            plan_id=plan_id,
            organization_id__in={organization_id for organization_id, _ in keys.values()},
            principal__in={principal for _, principal in keys.values()},
        )
    }
    none = HeldEntitlement("", EntitlementStatus.INACTIVE)
    return {given: found.get(key, none) for given, key in keys.items()}
