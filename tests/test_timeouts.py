"""Timeouts of agents' requests: each on_timeout action applied by the system once
expires_at passes, the escalate ladder (manager, then admins, then expire), attribution to
``system``, no double application, and the beat schedule that runs it."""

import json
import threading
from datetime import timedelta

import pytest
from django.conf import settings as django_settings
from django.db import connection, connections
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from envelopes.choices import EnvelopeState, RequestStatus
from envelopes.models import ApprovalRequest, Delivery
from envelopes.requests import timeouts
from envelopes.requests.channels import create_invite, register_channel
from envelopes.requests.decisions import act, decision_payload
from envelopes.requests.eligibility import refusal
from envelopes.requests.submissions import submit_request
from envelopes.services.decide import organization_key
from evidence.models import AuditEvent
from evidence.services.verification import verify_chain
from governance.choices import Role

pytestmark = pytest.mark.django_db

TTL = timedelta(hours=1)


@pytest.fixture
def manager(make_person):
    return make_person(username="manager")


@pytest.fixture
def owner(make_person, manager):
    return make_person(username="owner", manager=manager)


@pytest.fixture
def channel(owner):
    _, token = create_invite(owner)
    return register_channel(token, name="deploy bot")[0]


@pytest.fixture
def approver(make_person):
    return make_person(roles=(Role.GOVERNANCE_APPROVER,), username="approver")


@pytest.fixture
def admin(make_person):
    return make_person(roles=(Role.PLATFORM_ADMIN,), username="admin")


def submit(channel, on_timeout=None, ttl=TTL, **fields) -> ApprovalRequest:
    body = {"type": "approval_request", "title": "Transfer example.com", "expires_at": _rfc3339(ttl), **fields}
    if on_timeout:
        body["on_timeout"] = on_timeout
    return submit_request(channel, body, json.dumps(body))


def _rfc3339(ttl: timedelta) -> str:
    return (timezone.now() + ttl).isoformat().replace("+00:00", "Z")


def expire(request, ago=timedelta(seconds=1)) -> None:
    """The clock passes the request's expiry."""
    ApprovalRequest.objects.filter(pk=request.pk).update(expires_at=timezone.now() - ago)


def reload(request) -> ApprovalRequest:
    return ApprovalRequest.objects.select_related("envelope", "channel__owner").get(pk=request.pk)


def timeout_events(request) -> list[AuditEvent]:
    return list(
        AuditEvent.objects.filter(chain_id=str(request.pk), event_type="TIMEOUT_APPLIED").order_by("sequence_no")
    )


def assert_evidence_intact(request) -> None:
    envelope = reload(request).envelope
    verdict = verify_chain(str(envelope.pk), expected_final_hash=envelope.final_event_hash)
    assert verdict.valid, verdict


# --- each on_timeout action -------------------------------------------------------------------


@pytest.mark.parametrize(
    "on_timeout, status",
    [
        ("auto_approve", RequestStatus.APPROVED),
        ("auto_reject", RequestStatus.REJECTED),
        ("expire", RequestStatus.EXPIRED),
        (None, RequestStatus.EXPIRED),  # expires_at without on_timeout means expire
    ],
)
def test_an_expired_request_gets_its_on_timeout_applied_by_the_system(channel, on_timeout, status):
    request = submit(channel, on_timeout)
    expire(request)
    assert timeouts.apply_timeouts() == [(str(request.pk), status)]

    request = reload(request)
    assert (request.status, request.decided_by) == (status, "system")
    assert request.envelope.state == EnvelopeState.CLOSED
    body = decision_payload(request)
    assert (body["status"], body["approved_by"]) == (status, "system")
    assert f"on_timeout {on_timeout or 'expire'}" in body["comments"]

    events = list(AuditEvent.objects.filter(chain_id=str(request.pk)).order_by("sequence_no"))
    assert [e.event_type for e in events][-3:] == ["TIMEOUT_APPLIED", "DECISION_RECORDED", "ENVELOPE_CLOSED"]
    assert {(e.performer_type, e.performer_id) for e in events[-3:]} == {("system", "mandate")}
    assert events[-3].payload["on_timeout"] == (on_timeout or "expire")
    assert events[-3].payload["outcome"] == status
    assert events[-2].payload["decided_by"] == "system"
    assert_evidence_intact(request)


def test_a_request_not_yet_expired_is_left_alone(channel):
    request = submit(channel, "auto_approve")
    assert timeouts.apply_timeouts() == []
    assert reload(request).status == RequestStatus.PENDING
    assert timeout_events(request) == []


def test_a_request_decided_before_its_expiry_is_left_alone(channel, approver):
    request = submit(channel, "auto_reject")
    act(channel.organization_id, request.pk, approver, "approve")
    expire(request)
    assert timeouts.apply_timeouts() == []
    assert (reload(request).status, reload(request).decided_by) == (RequestStatus.APPROVED, str(approver.pk))


def test_a_timeout_decision_reaches_the_agent_by_webhook_and_wakes_waiters(
    channel, settings, monkeypatch, django_capture_on_commit_callbacks
):
    from envelopes.delivery import outbox
    from envelopes.requests import bus

    settings.MANDATE_WEBHOOK_ALLOW_PRIVATE = True
    published, dispatched = [], []
    monkeypatch.setattr(bus, "publish", published.append)
    monkeypatch.setattr(outbox, "dispatch", dispatched.append)
    request = submit(channel, "auto_approve", return_mode="both", return_webhook="http://127.0.0.1:9/hook")
    expire(request)
    with django_capture_on_commit_callbacks(execute=True):
        timeouts.apply_timeouts()

    delivery = Delivery.objects.get(request=request)
    assert delivery.event == "decision"
    assert json.loads(delivery.body) == decision_payload(reload(request))
    assert dispatched == [str(delivery.pk)]
    assert published == [str(request.pk), organization_key(request.channel.organization_id)]  # waiters, live inboxes


# --- the escalate ladder -----------------------------------------------------------------------------


def test_escalate_climbs_to_the_manager_then_the_admins_then_expires(channel, owner, manager, approver, admin):
    request = submit(channel, "escalate")
    assert refusal(request, approver) is None and refusal(request, manager) is not None

    expire(request)
    before = timezone.now()
    assert timeouts.apply_timeouts() == [(str(request.pk), "escalated")]
    request = reload(request)
    assert (request.status, request.escalation_level) == (RequestStatus.PENDING, 1)
    # The manager's turn lasts the agent's original TTL, counted from the timeout.
    assert abs(request.expires_at - (before + TTL)) < timedelta(seconds=5)
    assert refusal(request, manager) is None
    assert refusal(request, approver).code == "not_eligible"
    assert refusal(request, admin).code == "not_eligible"
    assert refusal(request, owner).code == "separation_of_duties"

    expire(request)
    assert timeouts.apply_timeouts() == [(str(request.pk), "escalated")]
    request = reload(request)
    assert (request.status, request.escalation_level) == (RequestStatus.PENDING, 2)
    assert refusal(request, admin) is None
    assert refusal(request, manager).code == "not_eligible"

    expire(request)
    assert timeouts.apply_timeouts() == [(str(request.pk), RequestStatus.EXPIRED)]
    request = reload(request)
    assert (request.status, request.decided_by) == (RequestStatus.EXPIRED, "system")
    assert "administrators" in request.comments

    applied = timeout_events(request)
    assert [(e.payload["escalation_level"], e.payload["outcome"]) for e in applied] == [
        (0, "escalated"),
        (1, "escalated"),
        (2, "expired"),
    ]
    assert [e.payload.get("new_escalation_level") for e in applied] == [1, 2, None]
    assert all(e.performer_type == "system" for e in applied)
    assert_evidence_intact(request)


def test_escalate_skips_to_the_admins_when_the_owner_has_no_manager(channel, owner, admin):
    owner.manager = None
    owner.save(update_fields=["manager"])
    request = submit(channel, "escalate")
    expire(request)
    timeouts.apply_timeouts()
    request = reload(request)
    assert request.escalation_level == 2 and refusal(request, admin) is None


def test_the_manager_decides_an_escalated_request_through_the_usual_path(channel, manager):
    request = submit(
        channel, "escalate", approval_rule={"type": "n_of_x", "required": 1, "approvers": [{"role": "approver"}]}
    )
    expire(request)
    timeouts.apply_timeouts()
    decided = act(channel.organization_id, request.pk, manager, "approve", comment="go")
    assert (decided.status, decided.decided_by, decided.comments) == (RequestStatus.APPROVED, str(manager.pk), "go")
    assert_evidence_intact(decided)


def test_the_escalation_ttl_comes_from_the_submitted_envelope(channel):
    request = submit(channel, "escalate", ttl=timedelta(minutes=10))
    expire(request)
    now = timezone.now()
    timeouts.apply_timeouts(now=now)
    ttl = reload(request).expires_at - now
    assert abs(ttl - timedelta(minutes=10)) < timedelta(seconds=5)


# --- never twice, never slower per request ------------------------------------------------------------


def test_a_second_sweep_applies_nothing(channel):
    request = submit(channel, "auto_approve")
    expire(request)
    assert len(timeouts.apply_timeouts()) == 1
    assert timeouts.apply_timeouts() == []
    assert len(timeout_events(request)) == 1


def test_a_request_whose_timeout_fails_is_skipped_and_the_others_still_apply(channel, monkeypatch):
    broken, fine = submit(channel, "auto_approve"), submit(channel, "auto_reject")
    expire(broken, ago=timedelta(minutes=2))
    expire(fine)
    real = timeouts.apply_timeout

    def flaky(request, now):
        if request.pk == broken.pk:
            raise RuntimeError("boom")
        return real(request, now)

    monkeypatch.setattr(timeouts, "apply_timeout", flaky)
    assert timeouts.apply_timeouts() == [(str(fine.pk), RequestStatus.REJECTED)]
    assert reload(broken).status == RequestStatus.PENDING and timeout_events(broken) == []
    assert_evidence_intact(broken)


def test_the_sweep_costs_the_same_queries_for_every_expired_request(channel):
    counts = []
    for n in (1, 2, 3):
        requests = [submit(channel, "expire") for _ in range(n)]
        for request in requests:
            expire(request)
        with CaptureQueriesContext(connection) as queries:
            assert len(timeouts.apply_timeouts()) == n
        counts.append(len(queries))
    assert counts[2] - counts[1] == counts[1] - counts[0]


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_two_sweeps_running_at_once_apply_each_timeout_exactly_once(channel):
    requests = [submit(channel, action) for action in ("auto_approve", "auto_reject", "expire", "escalate") * 3]
    for request in requests:
        expire(request)
    results, errors = [], []
    barrier = threading.Barrier(2)

    def sweep():
        try:
            barrier.wait()
            results.append(timeouts.apply_timeouts())
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
    applied = [request_id for result in results for request_id, _ in result]
    assert sorted(applied) == sorted(str(r.pk) for r in requests)
    for request in requests:
        assert len(timeout_events(request)) == 1
        assert_evidence_intact(request)


# --- the beat task ------------------------------------------------------------------------------------


def test_the_beat_schedule_runs_the_timeout_task_often_enough_for_60_seconds():
    from governance.celery import app

    entries = [e for e in django_settings.CELERY_BEAT_SCHEDULE.values() if e["task"] == "envelopes.apply_timeouts"]
    assert len(entries) == 1
    assert float(entries[0]["schedule"]) <= 30  # a tick, plus a sweep, stays within 60 s of expiry
    app.loader.import_default_modules()  # what a worker does at start: autodiscovery
    assert "envelopes.apply_timeouts" in app.tasks


def test_the_beat_task_applies_due_timeouts(channel):
    from envelopes.requests.tasks import apply_timeouts

    request = submit(channel, "auto_reject")
    expire(request)
    assert apply_timeouts.apply().get() == 1
    assert reload(request).status == RequestStatus.REJECTED
