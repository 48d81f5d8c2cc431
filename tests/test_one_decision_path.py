"""Every entry × every envelope kind goes through the core's one decision path.

Entries: the inbox pages, the inbox's bulk acknowledge, ``POST /v1/reviews``, the timeout
sweeper. Kinds: an escalated evaluation and an agent's approval request (route ``approval``:
the channel's owner may not decide, separation of duties; for bulk acknowledge, an
informational request on that route). For each pair: the person the kind's rules refuse is refused
with the rule's reason and nothing is written; an eligible decision closes the envelope once
with its evidence; a second decision is a conflict; and for a request, the agent is told
(request status, long-poll answer, webhook row, bus notification).
"""

import json
from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone
from rest_framework.test import APIClient

from envelopes.choices import EnvelopeState, RequestStatus
from envelopes.delivery import outbox
from envelopes.evaluation.engine import EvaluationRequest, evaluate
from envelopes.models import ApprovalRequest, Delivery, Envelope
from envelopes.requests import bus, timeouts
from envelopes.requests.channels import create_invite, register_channel
from envelopes.requests.submissions import submit_request
from evidence.models import AuditEvent
from evidence.services.verification import verify_chain
from governance.choices import Role
from governance.services.people import person_roles
from governance.services.tokens import issue_token
from tests.test_evaluate import payment

pytestmark = pytest.mark.django_db

ENTRIES = ["inbox", "bulk_acknowledge", "reviews_api", "timeout_sweeper"]
KINDS = ["evaluation", "approval_request"]


@pytest.fixture
def cast(demo, make_person):
    owner = make_person(roles=(Role.GOVERNANCE_APPROVER, Role.GOVERNANCE_REVIEWER), username="owner")
    approver = make_person(roles=(Role.GOVERNANCE_APPROVER, Role.GOVERNANCE_REVIEWER), username="approver")
    outsider = make_person(roles=(Role.PLATFORM_VIEWER,), username="viewer")
    _, invite = create_invite(owner)
    channel, api_key, _ = register_channel(invite, name="deploy bot")
    return {"owner": owner, "approver": approver, "outsider": outsider, "channel": channel, "api_key": api_key}


@pytest.fixture
def told(monkeypatch):
    """What reaches the agent after commit: bus notifications and queued webhook sends."""
    heard = {"published": [], "dispatched": []}
    monkeypatch.setattr(bus, "publish", heard["published"].append)
    monkeypatch.setattr(outbox, "dispatch", heard["dispatched"].append)
    return heard


def make_envelope(kind: str, cast, organization, request_type: str = "approval_request") -> Envelope:
    if kind == "evaluation":
        body = payment(confidence=0.5)
        answer = evaluate(organization, EvaluationRequest(**body), json.dumps(body), performer_id="test")
        return Envelope.objects.get(pk=answer["envelope_id"])
    body = {
        "type": request_type,
        "title": "Deploy to production",
        "route": "approval",
        "return_mode": "both",
        "return_webhook": "http://127.0.0.1:9/hook",
        "expires_at": (timezone.now() + timedelta(minutes=5)).isoformat(),
        "on_timeout": "auto_approve",
    }
    request = submit_request(cast["channel"], body, json.dumps(body))
    return request.envelope


def via_inbox(envelope: Envelope, person, client) -> int:
    """The person's decision through the admin page of the envelope's kind."""
    client.force_login(person)
    if envelope.kind == "evaluation":
        url = reverse("admin:envelopes_envelope_review", args=[envelope.pk])
        response = client.post(url, {"decision": "approve", "notes": "fine"})
    else:
        url = reverse("admin:envelopes_approvalrequest_change", args=[envelope.pk])
        response = client.post(url, {"action": "approve", "comment": "fine"})
    return response.status_code


def via_bulk_acknowledge(envelope: Envelope, person, client) -> int:
    client.force_login(person)
    response = client.post(reverse("admin:envelopes_inbox_acknowledge"), {"ids": [str(envelope.pk)]})
    return response.status_code


def via_reviews_api(envelope: Envelope, person, client) -> int:
    _, secret = issue_token(person, "test", sorted(person_roles(person)))
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
    body = {"envelope_id": str(envelope.pk), "decision": "approve", "reviewer": person.username}
    return api.post("/v1/reviews", body, format="json").status_code


def closed(envelope: Envelope) -> bool:
    return Envelope.objects.get(pk=envelope.pk).state == EnvelopeState.CLOSED


def assert_agent_told(envelope: Envelope, cast, told, status: str):
    request = ApprovalRequest.objects.get(pk=envelope.pk)
    assert request.status == status
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {cast['api_key']}")
    detail = api.get(f"/api/requests/{envelope.pk}").json()
    assert detail["status"] == status and detail["decision"]["status"] == status
    waited = api.get(f"/api/requests/{envelope.pk}/wait?timeout=1")
    assert waited.status_code == 200 and waited.json()["status"] == status
    delivery = Delivery.objects.get(request=request, event="decision")
    assert json.loads(delivery.body)["status"] == status
    assert str(delivery.pk) in told["dispatched"]
    assert str(envelope.pk) in told["published"]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("entry", ENTRIES)
def test_every_entry_applies_the_kind_rules_and_the_agent_is_told(
    entry, kind, cast, demo, client, told, django_capture_on_commit_callbacks
):
    request_type = "informational" if entry == "bulk_acknowledge" else "approval_request"
    envelope = make_envelope(kind, cast, demo, request_type)
    events_before = AuditEvent.objects.filter(chain_id=str(envelope.pk)).count()

    if entry == "timeout_sweeper":
        # The system applies timeouts to agents' requests; escalated evaluations have none.
        ApprovalRequest.objects.filter(pk=envelope.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
        with django_capture_on_commit_callbacks(execute=True):
            applied = timeouts.apply_timeouts()
        if kind == "evaluation":
            assert applied == [] and not closed(envelope)
            return
        assert applied == [(str(envelope.pk), RequestStatus.APPROVED)]
        assert closed(envelope)
        assert_agent_told(envelope, cast, told, RequestStatus.APPROVED)
        assert verify_chain(str(envelope.pk)).valid
        return

    decide = {"inbox": via_inbox, "bulk_acknowledge": via_bulk_acknowledge, "reviews_api": via_reviews_api}[entry]
    if entry == "bulk_acknowledge" and kind == "evaluation":
        # An escalation is decided, not acknowledged: the core refuses it and writes nothing.
        assert via_bulk_acknowledge(envelope, cast["approver"], client) == 302
        assert not closed(envelope)
        assert AuditEvent.objects.filter(chain_id=str(envelope.pk)).count() == events_before
        return
    # Refused by the kind's rules: the owner of the requesting agent (separation of duties)
    # for a request; a person without a review role for an evaluation.
    refused_person = cast["owner"] if kind == "approval_request" else cast["outsider"]
    status = decide(envelope, refused_person, client)
    assert status == 403 if entry == "reviews_api" else status in (200, 302, 403)
    assert not closed(envelope)
    assert AuditEvent.objects.filter(chain_id=str(envelope.pk)).count() == events_before
    if kind == "approval_request":
        assert ApprovalRequest.objects.get(pk=envelope.pk).status == RequestStatus.PENDING

    with django_capture_on_commit_callbacks(execute=True):
        status = decide(envelope, cast["approver"], client)
    assert status in (200, 302)
    assert closed(envelope)
    assert verify_chain(str(envelope.pk)).valid
    if kind == "approval_request":
        expected = RequestStatus.ACKNOWLEDGED if entry == "bulk_acknowledge" else RequestStatus.APPROVED
        assert_agent_told(envelope, cast, told, expected)
    else:
        assert Envelope.objects.get(pk=envelope.pk).review_decision == "APPROVED"

    # Decided once: a second decision through the API is a conflict and writes nothing.
    events_after = AuditEvent.objects.filter(chain_id=str(envelope.pk)).count()
    assert via_reviews_api(envelope, cast["approver"], client) == 409
    assert AuditEvent.objects.filter(chain_id=str(envelope.pk)).count() == events_after


def test_the_owner_reviewing_their_agents_request_through_the_api_gets_the_inbox_refusal(cast, demo):
    envelope = make_envelope("approval_request", cast, demo)
    _, secret = issue_token(cast["owner"], "test", [Role.GOVERNANCE_REVIEWER, Role.GOVERNANCE_APPROVER])
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
    response = api.post(
        "/v1/reviews", {"envelope_id": str(envelope.pk), "decision": "approve", "reviewer": "owner"}, format="json"
    )
    assert response.status_code == 403
    assert response.json() == {"error": "you own this agent: separation of duties"}
    assert ApprovalRequest.objects.get(pk=envelope.pk).status == RequestStatus.PENDING


def test_a_review_on_an_n_of_x_request_counts_as_one_vote(cast, demo, make_person, told):
    second = make_person(roles=(Role.GOVERNANCE_APPROVER,), username="second")
    body = {
        "type": "approval_request",
        "title": "Two people",
        "approval_rule": {"type": "n_of_x", "required": 2, "approvers": [str(cast["approver"].pk), str(second.pk)]},
    }
    request = submit_request(cast["channel"], body, json.dumps(body))
    first = via_reviews_api_response(request.envelope, cast["approver"])
    assert (first.status_code, first.json()["status"]) == (200, "recorded")
    assert ApprovalRequest.objects.get(pk=request.pk).status == RequestStatus.PENDING
    last = via_reviews_api_response(request.envelope, second)
    assert (last.status_code, last.json()["status"]) == (200, "resolved")
    assert ApprovalRequest.objects.get(pk=request.pk).status == RequestStatus.APPROVED


def via_reviews_api_response(envelope, person):
    _, secret = issue_token(person, "test", [Role.GOVERNANCE_APPROVER])
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
    body = {"envelope_id": str(envelope.pk), "decision": "approve", "reviewer": person.username}
    return api.post("/v1/reviews", body, format="json")


def test_an_entry_for_one_kind_does_not_decide_another(cast, demo):
    from envelopes.evaluation.reviews import review_envelope
    from envelopes.requests.decisions import act
    from governance.errors import NotFound

    evaluation = make_envelope("evaluation", cast, demo)
    request = make_envelope("approval_request", cast, demo)
    with pytest.raises(NotFound):
        act(demo.pk, evaluation.pk, cast["approver"], "approve")
    with pytest.raises(NotFound):
        review_envelope(demo, request.pk, "approve", cast["approver"])
    assert not closed(evaluation) and not closed(request)


def test_escalations_list_only_escalated_evaluations(cast, demo, client_with):
    evaluation = make_envelope("evaluation", cast, demo)
    request = make_envelope("approval_request", cast, demo)
    listed = client_with(Role.PLATFORM_VIEWER).get("/v1/escalations").json()
    ids = {item["identity"]["id"] for item in listed}
    assert str(evaluation.pk) in ids and str(request.pk) not in ids
    assert all(item["evaluation"]["outcome"] == "escalate" for item in listed)


# --- at once, on PostgreSQL ------------------------------------------------------------------


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_parallel_votes_and_batches_decide_each_request_once_and_never_fork_a_chain():
    import threading

    from django.db import connections

    from envelopes.services.decide import Actor, Decision, decide_many
    from governance.services.people import create_person, ensure_organization
    from tests.factories import declare_demo_authority

    organization = declare_demo_authority(ensure_organization("acme", "Acme"))
    owner = create_person(organization, "owner")
    approvers = [create_person(organization, f"approver{i}", roles=(Role.GOVERNANCE_APPROVER,)) for i in range(4)]
    _, invite = create_invite(owner)
    channel, _, _ = register_channel(invite, name="bot")
    body = {
        "type": "approval_request",
        "title": "Needs two",
        "approval_rule": {"type": "n_of_x", "required": 2, "approvers": [{"role": "governance.approver"}]},
    }
    ids = [str(submit_request(channel, body, json.dumps(body)).pk) for _ in range(20)]
    barrier = threading.Barrier(len(approvers))
    errors = []

    def vote(person, order):
        try:
            actor = Actor.of_person(person)
            barrier.wait()
            # Each thread decides every request, in its own order, as one batch: the core locks
            # in id order, so overlapping batches wait rather than deadlock.
            decide_many(organization.pk, [(rid, actor, Decision("approve")) for rid in order])
        except Exception as exc:  # asserted below
            errors.append(exc)
        finally:
            connections.close_all()

    orders = [ids, list(reversed(ids)), ids[10:] + ids[:10], ids[5:] + ids[:5]]
    threads = [threading.Thread(target=vote, args=(p, o)) for p, o in zip(approvers, orders, strict=True)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    for rid in ids:
        request = ApprovalRequest.objects.get(pk=rid)
        assert request.status == RequestStatus.APPROVED
        # Two votes closed it; the later voters were told it was decided and wrote nothing.
        assert request.approvals.count() == 2
        assert AuditEvent.objects.filter(chain_id=rid, event_type="DECISION_RECORDED").count() == 1
        assert verify_chain(rid).valid
    from evidence.services.verification import verify_ledger

    assert verify_ledger().valid


def test_a_superseding_card_without_an_open_change_request_changes_nothing(cast, demo):
    from envelopes.requests.decisions import supersede

    parent = ApprovalRequest.objects.get(pk=make_envelope("approval_request", cast, demo).pk)
    child = ApprovalRequest.objects.get(pk=make_envelope("approval_request", cast, demo).pk)
    events = AuditEvent.objects.filter(chain_id=str(parent.pk)).count()
    supersede(parent, child)
    assert ApprovalRequest.objects.get(pk=parent.pk).status == RequestStatus.PENDING
    assert AuditEvent.objects.filter(chain_id=str(parent.pk)).count() == events
