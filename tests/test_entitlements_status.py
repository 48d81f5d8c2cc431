"""Status entitlements (a subscription a holder is in or not), on the same model as run
balances: what the governed installer reads."""

from datetime import UTC, datetime, timedelta

import pytest

from entitlements.models import Entitlement
from entitlements.services.issuance import issue_runs, set_status_entitlement, status_of
from evidence.models import AuditEvent
from evidence.services.verification import verify_ledger
from governance.errors import Invalid

pytestmark = pytest.mark.django_db


def test_a_holder_without_one_is_inactive_then_active_once_set(organization):
    assert status_of(organization.pk, "0xAbC", "governance") == "inactive"
    entitlement = set_status_entitlement(
        organization.pk, principal="0xAbC", plan_id="governance", status="active", expires_at=None, issued_by="ops"
    )
    assert (entitlement.kind, entitlement.runs_remaining) == ("status", 0)
    assert status_of(organization.pk, "0xAbC", "governance") == "active"
    set_status_entitlement(
        organization.pk, principal="0xAbC", plan_id="governance", status="inactive", expires_at=None, issued_by="ops"
    )
    assert status_of(organization.pk, "0xAbC", "governance") == "inactive"
    assert Entitlement.objects.count() == 1
    changes = AuditEvent.objects.filter(event_type="GBX_ENTITLEMENT_STATUS_SET").order_by("sequence_no")
    assert [e.payload["entitlement_status"] for e in changes] == ["active", "inactive"]
    assert verify_ledger().valid


def test_an_active_status_past_its_expiry_reads_expired(organization):
    set_status_entitlement(
        organization.pk,
        principal="org.acme.root",
        plan_id="governance",
        status="active",
        expires_at=datetime.now(UTC) - timedelta(seconds=1),
        issued_by="ops",
    )
    assert status_of(organization.pk, "org.acme.root", "governance") == "expired"


def test_a_status_entitlement_is_never_a_run_balance(organization, gbx):
    customer = gbx.make_customer()
    set_status_entitlement(
        organization.pk,
        principal=customer.email,
        plan_id="gbx_standard",
        status="active",
        expires_at=None,
        issued_by="x",
    )
    answer = customer.post("consume", {"run_id": "r1"})
    assert (answer.status_code, answer.json()["error"]) == (402, "no_entitlement")
    issue_runs(
        organization.pk,
        principal=customer.email,
        plan_id="gbx_standard",
        runs_total=1,
        expires_at=datetime.now(UTC) + timedelta(days=1),
        issued_by="x",
    )
    assert customer.post("consume", {"run_id": "r1"}).status_code == 200
    assert Entitlement.objects.count() == 2


def test_an_unknown_status_is_refused(organization):
    with pytest.raises(Invalid, match="entitlement_status"):
        set_status_entitlement(
            organization.pk, principal="x", plan_id="governance", status="paused", expires_at=None, issued_by="ops"
        )
