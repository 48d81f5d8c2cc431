"""The control-plane revision: bumped by every change, read by the evaluation cache."""

from django.db import connection

from controlplane.models import Revision


def bump_revision(organization) -> None:
    """Call inside the transaction that changes declared authority (one upsert)."""
    table = connection.ops.quote_name(Revision._meta.db_table)
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {table} (organization_id, number) VALUES (%s, 1) "  # noqa: S608 (table name is ours)
            f"ON CONFLICT (organization_id) DO UPDATE SET number = {table}.number + 1",
            [organization.pk.hex if connection.vendor == "sqlite" else organization.pk],
        )


def current_revision(organization_id) -> int:
    return Revision.objects.filter(organization_id=organization_id).values_list("number", flat=True).first() or 0
