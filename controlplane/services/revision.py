"""The control-plane revision: bumped by every change, read by the evaluation cache."""

from django.db.models import F

from controlplane.models import Revision


def bump_revision(organization) -> None:
    """Call inside the transaction that changes declared authority."""
    updated = Revision.objects.filter(organization=organization).update(number=F("number") + 1)
    if not updated:
        Revision.objects.bulk_create([Revision(organization=organization, number=1)], ignore_conflicts=True)
        Revision.objects.filter(organization=organization).update(number=F("number") + 1)


def current_revision(organization_id) -> int:
    return Revision.objects.filter(organization_id=organization_id).values_list("number", flat=True).first() or 0
