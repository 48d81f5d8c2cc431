"""The two non-chained audit trails: control-plane changes and platform administration."""

from django.db.models import Q

from evidence.models import AdminAuditRecord, ControlPlaneAuditRecord


def record_controlplane_change(**fields) -> ControlPlaneAuditRecord:
    """Write one control-plane change (see ``controlplane_change`` for the fields)."""
    record = controlplane_change(**fields)
    record.save(force_insert=True)
    return record


def controlplane_change(
    *,
    organization_id,
    kind: str,
    resource_id: str,
    action: str,
    actor: str,
    version: int | None = None,
    summary: str = "",
    details: dict | None = None,
) -> ControlPlaneAuditRecord:
    """An unsaved record, for bulk_create by callers writing many at once (bundle apply)."""
    return ControlPlaneAuditRecord(
        organization_id=organization_id,
        resource_kind=kind,
        resource_id=resource_id,
        resource_version=version,
        action=action,
        actor=actor,
        summary=summary,
        details=details or {},
    )


def record_admin_action(
    *,
    action: str,
    actor_type: str,
    actor_id: str = "",
    outcome: str = "success",
    organization_id=None,
    target_type: str = "",
    target_id: str = "",
    request_id: str = "",
    client_ip: str = "",
    required_permission: str = "",
    details: dict | None = None,
) -> AdminAuditRecord:
    return AdminAuditRecord.objects.create(
        organization_id=organization_id,
        action=action,
        outcome=outcome,
        actor_type=actor_type,
        actor_id=actor_id,
        target_type=target_type,
        target_id=target_id,
        request_id=request_id,
        client_ip=client_ip,
        required_permission=required_permission,
        details=details or {},
    )


def admin_audit_entries(organization, *, include_platform_records: bool, filters: dict, limit: int):
    """Newest first: the organization's records, plus records bound to no organization (the
    platform's own, e.g. ``bootstrap.admin_created``) when ``include_platform_records``."""
    scope = Q(organization_id=organization.pk)
    if include_platform_records:
        scope |= Q(organization_id__isnull=True)
    exact = {name: value for name, value in filters.items() if value}
    return list(AdminAuditRecord.objects.filter(scope, **exact).order_by("-occurred_at", "-id")[:limit])


def controlplane_audit_entries(
    organization_id, *, kind="", resource_id="", actor="", action="", since=None, until=None, limit=100
):
    """Records matching every given filter, newest first. ``since`` and ``until`` are inclusive."""
    records = ControlPlaneAuditRecord.objects.filter(organization_id=organization_id)
    if kind:
        records = records.filter(resource_kind__iexact=kind)
    if resource_id:
        records = records.filter(resource_id=resource_id)
    if actor:
        records = records.filter(actor=actor)
    if action:
        records = records.filter(action=action)
    if since is not None:
        records = records.filter(occurred_at__gte=since)
    if until is not None:
        records = records.filter(occurred_at__lte=until)
    return list(records.order_by("-occurred_at", "-id")[:limit])
