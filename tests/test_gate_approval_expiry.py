"""Held actions nobody decided in time: the beat task ``envelopes.gate_expire_approvals``
expires them through the core (``timeout`` by the system), once each, closing their envelope;
what an operator or an agent sees of them afterwards."""

import threading
from datetime import timedelta

import pytest
from django.conf import settings as django_settings
from django.db import connections
from django.utils import timezone

from envelopes.gate import expiry
from envelopes.models import Envelope, GateApproval
from evidence.models import AuditEvent
from evidence.services.verification import verify_chain
from governance.choices import Role
from tests.held_actions import hold_action

pytestmark = pytest.mark.django_db


def expired_held(organization, seconds_ago=1):
    return hold_action(organization, expires_in=timedelta(seconds=-seconds_ago)).gate_approval


def events(approval: GateApproval) -> list[tuple[str, str]]:
    rows = AuditEvent.objects.filter(chain_id=str(approval.pk)).order_by("sequence_no")
    return list(rows.values_list("event_type", "performer_type"))


def test_a_held_action_past_its_expiry_is_expired_by_the_system(organization):
    late = expired_held(organization)
    assert expiry.expire_due() == [late.approval_id]
    late.refresh_from_db()
    assert late.state == "expired" and late.decided_by == ""
    assert Envelope.objects.get(pk=late.pk).state == "closed"
    assert events(late)[-2:] == [("GATE_APPROVAL_EXPIRED", "system"), ("ENVELOPE_CLOSED", "system")]
    assert verify_chain(str(late.pk)).valid


def test_only_pending_held_actions_past_their_expiry_are_expired(organization, make_person):
    from envelopes.services import decide as core

    waiting = hold_action(organization).gate_approval  # expires in 30 minutes
    denied = expired_held(organization, seconds_ago=0)
    operator = make_person(roles=[Role.PLATFORM_OPERATOR])
    GateApproval.objects.filter(pk=denied.pk).update(expires_at=timezone.now() + timedelta(minutes=1))
    core.decide(organization.pk, denied.pk, core.Actor.of_person(operator), core.Decision("deny"), kind="action")
    GateApproval.objects.filter(pk=denied.pk).update(expires_at=timezone.now() - timedelta(minutes=1))
    assert expiry.expire_due() == []
    assert GateApproval.objects.get(pk=waiting.pk).state == "pending"
    assert GateApproval.objects.get(pk=denied.pk).state == "denied"


def test_a_second_sweep_finds_nothing_left(organization):
    expired_held(organization)
    expired_held(organization)
    assert len(expiry.expire_due()) == 2
    assert expiry.expire_due() == []


def test_one_that_fails_is_left_for_the_next_sweep(organization, monkeypatch):
    broken, fine = expired_held(organization, seconds_ago=20), expired_held(organization, seconds_ago=10)
    real = expiry.decide

    def flaky(organization_id, envelope_id, *args, **kwargs):
        if envelope_id == broken.pk:
            raise RuntimeError("boom")
        return real(organization_id, envelope_id, *args, **kwargs)

    monkeypatch.setattr(expiry, "decide", flaky)
    assert expiry.expire_due() == [fine.approval_id]
    assert GateApproval.objects.get(pk=broken.pk).state == "pending"
    monkeypatch.setattr(expiry, "decide", real)
    assert expiry.expire_due() == [broken.approval_id]


def test_once_expired_nobody_decides_it_and_it_reads_expired(organization, client_with):
    late = expired_held(organization)
    operator = client_with(Role.PLATFORM_OPERATOR)
    # before the sweep: already answered as expired, and nobody may decide it
    assert operator.get(f"/v1/approvals/{late.approval_id}").json()["state"] == "expired"
    assert operator.post(f"/v1/approvals/{late.approval_id}/approve").status_code == 404
    expiry.expire_due()
    listed = operator.get("/v1/approvals", {"status": "expired"}).json()["approvals"]
    assert [(a["approval_id"], a["state"], a["status"]) for a in listed] == [(late.approval_id, "expired", "expired")]
    assert operator.post(f"/v1/approvals/{late.approval_id}/deny").status_code == 404


def test_the_inbox_may_not_approve_an_expired_held_action(organization, make_person):
    from envelopes.services import decide as core
    from governance.errors import Conflict

    late = expired_held(organization)
    operator = make_person(roles=[Role.PLATFORM_OPERATOR])
    with pytest.raises(Conflict, match="expired"):
        core.decide(organization.pk, late.pk, core.Actor.of_person(operator), core.Decision("approve"), kind="action")
    assert GateApproval.objects.get(pk=late.pk).state == "pending"


def test_the_beat_schedule_runs_the_expiry_task_and_workers_know_it():
    from governance.celery import app

    entries = [
        e for e in django_settings.CELERY_BEAT_SCHEDULE.values() if e["task"] == "envelopes.gate_expire_approvals"
    ]
    assert len(entries) == 1 and float(entries[0]["schedule"]) <= 30
    app.loader.import_default_modules()  # what a worker does at start: autodiscovery
    assert "envelopes.gate_expire_approvals" in app.tasks


def test_the_beat_task_expires_due_held_actions(organization):
    from envelopes.gate.tasks import expire_approvals

    late = expired_held(organization)
    assert expire_approvals.apply().get() == 1
    assert GateApproval.objects.get(pk=late.pk).state == "expired"


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_two_sweeps_at_once_expire_each_held_action_exactly_once(organization):
    late = [expired_held(organization) for _ in range(8)]
    results, errors = [], []
    barrier = threading.Barrier(2)

    def sweep():
        try:
            barrier.wait()
            results.append(expiry.expire_due())
        except Exception as exc:  # collected and asserted
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=sweep) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert sorted(a for result in results for a in result) == sorted(a.approval_id for a in late)
    for approval in late:
        assert [e for e, _ in events(approval)].count("GATE_APPROVAL_EXPIRED") == 1
