"""A run's lifecycle, in GBX's call order per run_id: check → consume → run_start →
run_complete (which seals it). Each step is one transaction with its evidence; the balance
is taken by a conditional decrement (never below zero, also under parallel consumes), and a
run_id is consumed once per principal (a unique constraint, not a read-then-write)."""

from dataclasses import dataclass
from datetime import datetime

from django.db import IntegrityError, transaction
from django.db.models import F, Q
from django.utils import timezone

from entitlements.choices import EntitlementKind, RunEvent, RunState
from entitlements.models import Entitlement, Run
from entitlements.services.evidence import record_run_step
from entitlements.services.holders import Holder, run_id_value
from evidence.seals import SealBundle, issue_seal
from governance.errors import Conflict, Exhausted, Invalid, NotFound, OutOfOrder
from governance.timestamps import rfc3339_isoformat

HASH_HEX = 64


@dataclass(frozen=True)
class Availability:
    entitlement: Entitlement
    runs_remaining: int
    expires_at: datetime | None


def _usable(holder: Holder, *, lock: bool = False) -> Entitlement:
    """The holder's runs entitlement a run is taken from: the one expiring first among those
    with runs left and not expired; ``Exhausted`` (402) naming why there is none."""
    now = timezone.now()
    mine = Entitlement.objects.filter(
        organization_id=holder.organization_id, kind=EntitlementKind.RUNS, principal=holder.principal
    )
    usable = mine.filter(runs_remaining__gt=0).filter(Q(expires_at__isnull=True) | Q(expires_at__gt=now))
    if lock:
        usable = usable.select_for_update()
    found = usable.order_by(F("expires_at").asc(nulls_last=True), "created_at").first()
    if found is not None:
        return found
    if not mine.exists():
        raise Exhausted("no entitlement for this principal", code="no_entitlement")
    if mine.filter(runs_remaining__gt=0).exists():
        raise Exhausted("the entitlement has expired", code="entitlement_expired")
    raise Exhausted("no runs remain on the entitlement", code="entitlement_exhausted")


def _run(holder: Holder, run_id: str, *, lock: bool = False) -> Run | None:
    runs = Run.objects.filter(organization_id=holder.organization_id, principal=holder.principal, run_id=run_id)
    if lock:
        runs = runs.select_for_update()
    return runs.select_related("entitlement").first()


def check(holder: Holder, run_id) -> Availability:
    """Whether a run may be consumed for ``run_id`` now (recorded in the run's chain)."""
    run_id = run_id_value(run_id)
    if _run(holder, run_id) is not None:
        raise Conflict("this run_id was already consumed", code="run_id_already_consumed")
    entitlement = _usable(holder)
    with transaction.atomic():
        record_run_step(
            holder,
            run_id,
            RunEvent.CHECKED,
            {
                "entitlement_id": entitlement.entitlement_id,
                "allowed": True,
                "runs_remaining": entitlement.runs_remaining,
            },
        )
    return Availability(entitlement, entitlement.runs_remaining, entitlement.expires_at)


def consume(holder: Holder, run_id) -> Availability:
    """One run off the balance for ``run_id``: 409 if the run_id was consumed before, 402 if
    no run is left (nothing is written then)."""
    run_id = run_id_value(run_id)
    now = timezone.now()
    with transaction.atomic():
        entitlement = _usable(holder)
        try:
            with transaction.atomic():
                Run.objects.create(
                    organization_id=holder.organization_id,
                    entitlement=entitlement,
                    principal=holder.principal,
                    run_id=run_id,
                    consumed_at=now,
                )
        except IntegrityError:
            raise Conflict("this run_id was already consumed", code="run_id_already_consumed") from None
        taken = (
            Entitlement.objects.filter(pk=entitlement.pk, runs_remaining__gt=0)
            .filter(Q(expires_at__isnull=True) | Q(expires_at__gt=now))
            .update(runs_remaining=F("runs_remaining") - 1, updated_at=now)
        )
        if not taken:  # a parallel consume took the last run between the read and the update
            raise Exhausted("no runs remain on the entitlement", code="entitlement_exhausted")
        remaining = Entitlement.objects.values_list("runs_remaining", flat=True).get(pk=entitlement.pk)
        record_run_step(
            holder,
            run_id,
            RunEvent.CONSUMED,
            {"entitlement_id": entitlement.entitlement_id, "runs_remaining": remaining},
        )
    return Availability(entitlement, remaining, entitlement.expires_at)


def _hash(value, field: str) -> str:
    """A SHA-256 as 64 lower-case hex digits (an optional ``sha256:`` prefix is dropped)."""
    if not isinstance(value, str):
        raise Invalid("must be a SHA-256 as 64 hex digits", field=field)
    digits = value.removeprefix("sha256:").lower()
    if len(digits) != HASH_HEX or any(c not in "0123456789abcdef" for c in digits):
        raise Invalid("must be a SHA-256 as 64 hex digits", field=field)
    return digits


def _text(value, field: str, limit: int) -> str:
    if not isinstance(value, str) or not value.strip() or len(value) > limit:
        raise Invalid(f"must be a non-empty string of at most {limit} characters", field=field)
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise Invalid("must not contain control characters", field=field)
    return value


def run_start(holder: Holder, run_id, *, inputs_sha256, container_image, project_id) -> Run:
    """What the run starts from: 422 before its consume, 409 when started before."""
    run_id = run_id_value(run_id)
    inputs = _hash(inputs_sha256, "inputs_sha256")
    image = _text(container_image, "container_image", 500)
    project = _text(project_id, "project_id", 200)
    with transaction.atomic():
        run = _run(holder, run_id, lock=True)
        if run is None:
            raise OutOfOrder("consume this run_id before starting it", code="consume_required")
        if run.state != RunState.CONSUMED:
            raise Conflict("this run was already started", code="run_already_started")
        run.state, run.started_at = RunState.STARTED, timezone.now()
        run.inputs_sha256, run.container_image, run.project_id = inputs, image, project
        run.save(update_fields=["state", "started_at", "inputs_sha256", "container_image", "project_id"])
        record_run_step(
            holder,
            run_id,
            RunEvent.STARTED,
            {"inputs_sha256": inputs, "container_image": image, "project_id": project},
        )
    return run


def run_complete(holder: Holder, run_id, *, outputs_sha256, run_manifest_sha256) -> tuple[Run, SealBundle]:
    """The run's outputs, sealed: 422 before its consume or start, 409 when completed before."""
    run_id = run_id_value(run_id)
    outputs = _hash(outputs_sha256, "outputs_sha256")
    manifest = _hash(run_manifest_sha256, "run_manifest_sha256")
    with transaction.atomic():
        run = _run(holder, run_id, lock=True)
        if run is None:
            raise OutOfOrder("consume and start this run_id before completing it", code="consume_required")
        if run.state == RunState.CONSUMED:
            raise OutOfOrder("start this run before completing it", code="run_start_required")
        if run.state == RunState.COMPLETED:
            raise Conflict("this run was already completed", code="run_already_completed")
        bundle = issue_seal(
            principal=holder.principal,
            entitlement_id=run.entitlement.entitlement_id,
            run_id=run_id,
            inputs_sha256=run.inputs_sha256,
            run_manifest_sha256=manifest,
            outputs_sha256=outputs,
            container_image=run.container_image,
            project_id=run.project_id,
        )
        run.state, run.completed_at = RunState.COMPLETED, timezone.now()
        run.outputs_sha256, run.run_manifest_sha256 = outputs, manifest
        run.seal_id, run.seal_json, run.seal_sig = bundle.seal_id, bundle.seal_json, bundle.seal_sig
        run.seal_svg, run.public_key_pem, run.verify_md = bundle.seal_svg, bundle.public_key_pem, bundle.verify_md
        run.save()
        record_run_step(
            holder,
            run_id,
            RunEvent.COMPLETED,
            {
                "outputs_sha256": outputs,
                "run_manifest_sha256": manifest,
                "seal_id": bundle.seal_id,
                "seal_kid": bundle.seal_json.get("kid"),
                "completed_at": rfc3339_isoformat(run.completed_at),
            },
        )
    return run, bundle


def sealed_run(holder: Holder, run_id) -> Run:
    """A completed run of the holder's, for its seal bundle; NotFound otherwise."""
    run = _run(holder, run_id_value(run_id))
    if run is None or run.state != RunState.COMPLETED:
        raise NotFound("no sealed run with this run_id", code="run_not_found")
    return run


def bundle_of(run: Run) -> SealBundle:
    """The sealed run's bundle as it was issued."""
    return SealBundle(
        seal_id=run.seal_id,
        seal_json=run.seal_json,
        seal_sig=run.seal_sig,
        seal_svg=run.seal_svg,
        public_key_pem=run.public_key_pem,
        verify_md=run.verify_md,
    )
