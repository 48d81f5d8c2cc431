"""Resolving escalations: ``POST /v1/reviews`` and the admin inbox, which share one service."""

import json
import threading
import uuid

import pytest
from django.db import connections
from django.test.client import RequestFactory

from envelopes.evaluation.engine import EvaluationRequest, evaluate
from envelopes.evaluation.reviews import review_envelope
from envelopes.inbox.views import inbox_context
from envelopes.models import Envelope
from evidence.models import AuditEvent
from evidence.services.verification import verify_chain
from governance.api.errors import api_error
from governance.choices import Role
from governance.errors import Conflict, DomainError, Refused
from governance.services.people import ensure_organization
from tests.factories import declare_demo_authority
from tests.test_evidence_chain import _pk, _tamper

pytestmark = pytest.mark.django_db

REVIEWER_ROLES = (Role.GOVERNANCE_REVIEWER, Role.PLATFORM_ADMIN)


def submit(organization, confidence=0.5, **overrides) -> Envelope:
    """Evaluate a payment release through the service; a low confidence escalates."""
    body = {
        "surface_id": "surf-payment-release",
        "agent_id": "agent-payments-prod",
        "confidence": confidence,
        "consequence": {"type": "monetary", "amount": 500, "currency": "GBP"},
        "context": {"account_id": "acc-1", "destination_country": "GB"},
        **overrides,
    }
    request = EvaluationRequest(**body)
    response = evaluate(organization, request, json.dumps(body), performer_id="test")
    return Envelope.objects.get(pk=response["envelope_id"])


@pytest.fixture
def escalation(demo) -> Envelope:
    envelope = submit(demo)
    assert envelope.state == "awaiting_review"
    return envelope


@pytest.fixture
def reviewer_client(client_with):
    return client_with(Role.GOVERNANCE_REVIEWER)


def review(client, **body):
    return client.post("/v1/reviews", body, format="json")


def valid_chain(envelope: Envelope) -> bool:
    envelope.refresh_from_db()
    return verify_chain(
        envelope.chain_id,
        expected_length=len(envelope.audit_event_ids),
        expected_final_hash=envelope.final_event_hash,
        expected_terminal_types={"ENVELOPE_CLOSED"} if envelope.state == "closed" else {"ESCALATION_PENDING"},
    ).valid


# --- POST /v1/reviews -----------------------------------------------------------------------


def test_reviewer_approves_an_escalation_and_the_envelope_closes(make_person, make_token, api_client, escalation):
    person = make_person(roles=[Role.GOVERNANCE_REVIEWER], username="compliance-lead")
    api_client.credentials(HTTP_AUTHORIZATION=f"Bearer {make_token(Role.GOVERNANCE_REVIEWER, person=person)}")
    events_before = len(escalation.audit_event_ids)

    response = review(
        api_client,
        envelope_id=str(escalation.id),
        decision="approve",
        reviewer="user-compliance-lead",
        notes="Manual review completed",
    )

    assert response.status_code == 200
    assert response.json() == {"envelope_id": str(escalation.id), "status": "resolved"}
    envelope = Envelope.objects.get(pk=escalation.pk)
    assert envelope.state == "closed" and envelope.closed_at is not None
    assert envelope.outcome == "escalate" and envelope.reason_code == "CONFIDENCE_BELOW_THRESHOLD"
    assert (envelope.review_decision, envelope.reviewer_kind, envelope.review_notes) == (
        "APPROVED",
        "user",
        "Manual review completed",
    )
    # The authenticated person is the reviewer, not the identity the body claims.
    assert envelope.reviewer_id == "compliance-lead"
    assert envelope.reviewed_at == envelope.closed_at == envelope.updated_at

    events = list(AuditEvent.objects.filter(chain_id=envelope.chain_id).order_by("sequence_no"))
    assert [e.event_type for e in events[-3:]] == ["ESCALATION_PENDING", "ESCALATION_REVIEWED", "ENVELOPE_CLOSED"]
    reviewed, closed = events[-2:]
    assert reviewed.payload == {
        "decision": "APPROVED",
        "reviewer_id": "compliance-lead",
        "notes": "Manual review completed",
    }
    assert closed.payload == {"state": "closed"}
    assert {(e.performer_type, e.performer_id) for e in (reviewed, closed)} == {("user", "compliance-lead")}
    assert envelope.audit_event_ids == [str(e.pk) for e in events]
    assert len(envelope.audit_event_ids) == events_before + 2
    assert envelope.final_event_hash == closed.hash and envelope.first_event_hash == events[0].hash
    assert valid_chain(envelope)


def test_the_envelope_api_shows_state_and_review_after_a_review(client_with, escalation):
    review(
        client_with(Role.PLATFORM_ADMIN), envelope_id=str(escalation.id), decision="reject", reviewer="x", notes="No"
    )
    body = client_with(Role.PLATFORM_VIEWER).get(f"/v1/envelopes/{escalation.id}").json()
    assert body["state"] == "closed" and body["closed_at"]
    assert body["evaluation"]["outcome"] == "escalate"
    assert body["review"]["decision"] == "REJECTED"
    assert body["review"]["reviewer_kind"] == "user" and body["review"]["notes"] == "No"
    assert body["review"]["reviewed_at"] and body["review"]["reviewer_id"]
    assert body["integrity"]["final_event_hash"] == Envelope.objects.get(pk=escalation.pk).final_event_hash
    integrity = client_with(Role.PLATFORM_VIEWER).get(f"/v1/evidence/envelopes/{escalation.id}/integrity").json()
    assert integrity["valid"] is True


@pytest.mark.parametrize(
    ("word", "decision"),
    [("approve", "APPROVED"), ("accept", "APPROVED"), ("reject", "REJECTED"), ("deny", "REJECTED")],
)
def test_every_decision_word_resolves(reviewer_client, escalation, word, decision):
    response = review(reviewer_client, envelope_id=str(escalation.id), decision=word, reviewer="r1")
    assert response.status_code == 200
    envelope = Envelope.objects.get(pk=escalation.pk)
    assert envelope.review_decision == decision and envelope.review_notes == ""
    assert valid_chain(envelope)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"decision": "approve", "reviewer": "r1"}, "envelope_id"),
        ({"envelope_id": "ENVELOPE", "reviewer": "r1"}, "decision"),
        ({"envelope_id": "ENVELOPE", "decision": "approve"}, "reviewer"),
        ({"envelope_id": "ENVELOPE", "decision": "approve", "reviewer": ""}, "reviewer"),
        ({"envelope_id": "ENVELOPE", "decision": "approve", "reviewer": "   "}, "reviewer"),
        ({"envelope_id": "ENVELOPE", "decision": "approve", "reviewer": "x" * 256}, "reviewer"),
        ({"envelope_id": "ENVELOPE", "decision": "approve", "reviewer": "bad\nname"}, "reviewer"),
        ({"envelope_id": "ENVELOPE", "decision": "approve", "reviewer": "bell\x07"}, "reviewer"),
        ({"envelope_id": "ENVELOPE", "decision": "approve", "reviewer": 42}, "reviewer"),
        ({"envelope_id": "ENVELOPE", "decision": "maybe", "reviewer": "r1"}, "decision"),
        ({"envelope_id": "ENVELOPE", "decision": "", "reviewer": "r1"}, "decision"),
        ({"envelope_id": "ENVELOPE", "decision": True, "reviewer": "r1"}, "decision"),
        ({"envelope_id": "not-a-uuid", "decision": "approve", "reviewer": "r1"}, "envelope_id"),
        ({"envelope_id": 7, "decision": "approve", "reviewer": "r1"}, "envelope_id"),
    ],
)
def test_bad_review_requests_are_400_and_change_nothing(reviewer_client, escalation, body, message):
    body = {key: str(escalation.id) if value == "ENVELOPE" else value for key, value in body.items()}
    response = review(reviewer_client, **body)
    assert response.status_code == 400
    assert set(response.json()) == {"error"} and message in response.json()["error"]
    assert Envelope.objects.get(pk=escalation.pk).state == "awaiting_review"


def test_a_body_that_is_not_a_json_object_is_400(reviewer_client, escalation):
    for payload in ("{not json", "[]", '"approve"'):
        response = reviewer_client.post("/v1/reviews", payload, content_type="application/json")
        assert response.status_code == 400 and "error" in response.json()


def test_a_reviewer_of_exactly_255_characters_is_accepted(reviewer_client, escalation):
    response = review(reviewer_client, envelope_id=str(escalation.id), decision="approve", reviewer="r" * 255)
    assert response.status_code == 200


def test_unknown_envelope_is_404(reviewer_client, demo):
    response = review(reviewer_client, envelope_id=str(uuid.uuid4()), decision="approve", reviewer="r1")
    assert response.status_code == 404
    assert response.json() == {"error": "envelope not found"}


def test_another_organizations_envelope_is_404_and_stays_waiting(reviewer_client, demo):
    other = declare_demo_authority(ensure_organization("globex", "Globex"))
    theirs = submit(other)
    response = review(reviewer_client, envelope_id=str(theirs.id), decision="approve", reviewer="r1")
    assert response.status_code == 404
    assert Envelope.objects.get(pk=theirs.pk).state == "awaiting_review"


def test_second_review_is_409_and_names_who_decided(make_person, make_token, api_client, escalation):
    first = make_person(roles=[Role.GOVERNANCE_REVIEWER], username="first-reviewer")
    api_client.credentials(HTTP_AUTHORIZATION=f"Bearer {make_token(Role.GOVERNANCE_REVIEWER, person=first)}")
    assert review(api_client, envelope_id=str(escalation.id), decision="approve", reviewer="a").status_code == 200
    closed = Envelope.objects.get(pk=escalation.pk)

    response = review(api_client, envelope_id=str(escalation.id), decision="reject", reviewer="b", notes="late")
    assert response.status_code == 409
    assert "already closed" in response.json()["error"] and "first-reviewer" in response.json()["error"]
    after = Envelope.objects.get(pk=escalation.pk)
    assert (after.review_decision, after.final_event_hash, after.audit_event_ids) == (
        "APPROVED",
        closed.final_event_hash,
        closed.audit_event_ids,
    )
    assert valid_chain(after)


def test_an_envelope_that_was_never_escalated_is_409(reviewer_client, demo):
    accepted = submit(demo, confidence=0.99)
    assert accepted.state == "closed" and accepted.outcome == "accept"
    response = review(reviewer_client, envelope_id=str(accepted.id), decision="approve", reviewer="r1")
    assert response.status_code == 409
    assert Envelope.objects.get(pk=accepted.pk).review_decision == ""


@pytest.mark.parametrize("role", [Role.PLATFORM_OPERATOR, Role.PLATFORM_VIEWER, Role.GOVERNANCE_APPROVER])
def test_roles_other_than_reviewer_and_admin_are_403(client_with, escalation, role):
    response = review(client_with(role), envelope_id=str(escalation.id), decision="approve", reviewer="r1")
    assert response.status_code == 403
    assert response.json() == {"error": "forbidden", "required_permission": "reviews:write"}
    assert Envelope.objects.get(pk=escalation.pk).state == "awaiting_review"


@pytest.mark.parametrize("role", REVIEWER_ROLES)
def test_reviewer_and_admin_may_review(client_with, escalation, role):
    response = review(client_with(role), envelope_id=str(escalation.id), decision="approve", reviewer="r1")
    assert response.status_code == 200


def test_unauthenticated_review_is_401(api_client, escalation):
    response = review(api_client, envelope_id=str(escalation.id), decision="approve", reviewer="r1")
    assert response.status_code == 401 and response.json() == {"error": "unauthenticated"}


def test_in_open_mode_the_body_reviewer_is_recorded(settings, api_client):
    settings.MANDATE_AUTH_MODE = "open"
    organization = declare_demo_authority(ensure_organization(settings.MANDATE_DEFAULT_ORGANIZATION, "Demo"))
    envelope = submit(organization)
    response = review(api_client, envelope_id=str(envelope.id), decision="approve", reviewer="user-compliance-lead")
    assert response.status_code == 200
    assert Envelope.objects.get(pk=envelope.pk).reviewer_id == "user-compliance-lead"


# --- the service --------------------------------------------------------------------------


def test_review_service_takes_a_person_and_records_their_username(make_person, escalation, organization):
    person = make_person(username="dana", roles=(Role.GOVERNANCE_REVIEWER,))
    envelope = review_envelope(organization, escalation.pk, "reject", person, notes="  not this time  ")
    assert (envelope.reviewer_id, envelope.review_decision, envelope.review_notes) == (
        "dana",
        "REJECTED",
        "not this time",
    )
    assert Envelope.objects.get(pk=escalation.pk).state == "closed"


def test_review_service_refuses_a_person_without_a_review_role(make_person, escalation, organization):
    person = make_person(username="erin", roles=(Role.GOVERNANCE_APPROVER,))
    with pytest.raises(Refused) as refused:
        review_envelope(organization, escalation.pk, "approve", person)
    assert api_error(refused.value).status_code == 403
    assert Envelope.objects.get(pk=escalation.pk).state == "awaiting_review"


def test_review_service_refuses_a_closed_envelope_without_writing_evidence(escalation, organization):
    review_envelope(organization, escalation.pk, "approve", "first")
    count = AuditEvent.objects.count()
    with pytest.raises(Conflict):
        review_envelope(organization, escalation.pk, "approve", "second")
    assert AuditEvent.objects.count() == count


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_two_reviewers_at_once_cannot_both_decide():
    organization = declare_demo_authority(ensure_organization("acme", "Acme"))
    envelope = submit(organization)
    barrier = threading.Barrier(2)
    results = []

    def decide(name, word):
        try:
            barrier.wait()
            review_envelope(organization, envelope.pk, word, name)
            results.append(200)
        except DomainError as exc:
            results.append(api_error(exc).status_code)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=decide, args=args) for args in (("ann", "approve"), ("bo", "reject"))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(results) == [200, 409]
    envelope.refresh_from_db()
    assert envelope.state == "closed"
    assert AuditEvent.objects.filter(chain_id=envelope.chain_id, event_type="ESCALATION_REVIEWED").count() == 1
    assert valid_chain(envelope)


# --- the admin inbox and review page (HTTP, no browser) ------------------------------------


@pytest.fixture
def signed_in(client, make_person):
    def sign_in(*roles, username=None):
        person = make_person(roles=roles, username=username)
        client.force_login(person)
        return client

    return sign_in


def page_of(response) -> str:
    return response.content.decode()


def review_page_url(envelope) -> str:
    return f"/admin/envelopes/envelope/{envelope.pk}/review/"


def test_the_inbox_shows_a_card_per_waiting_envelope(signed_in, demo):
    waiting = submit(demo)
    consequence = submit(demo, confidence=0.95, consequence={"type": "monetary", "amount": 20000, "currency": "GBP"})
    submit(demo, confidence=0.99)  # accepted: nothing to review
    html = page_of(signed_in(Role.GOVERNANCE_REVIEWER).get("/admin/"))
    assert html.count('<article class="inbox-card') == 2
    assert review_page_url(waiting) in html and review_page_url(consequence) in html
    for text in ("agent-payments-prod", "surf-payment-release", "Confidence below threshold", "GBP 20,000"):
        assert text in html
    assert "threshold 0.85" in html and "limit GBP 10,000" in html and "high risk" in html
    assert "Console" in html  # the app list stays on the page


def test_the_inbox_is_empty_and_says_what_will_appear(signed_in, demo):
    html = page_of(signed_in(Role.PLATFORM_VIEWER).get("/admin/"))
    assert "Nothing is waiting for you" in html and "escalates and appears here" in html


def test_the_inbox_shows_only_the_persons_organization(signed_in, demo):
    other = declare_demo_authority(ensure_organization("globex", "Globex"))
    theirs = submit(other)
    html = page_of(signed_in(Role.GOVERNANCE_REVIEWER).get("/admin/"))
    assert review_page_url(theirs) not in html
    assert signed_in(Role.GOVERNANCE_REVIEWER).get(review_page_url(theirs), follow=True).redirect_chain


def test_the_inbox_filters_live_in_the_url(signed_in, demo):
    low = submit(demo)
    high = submit(demo, confidence=0.95, consequence={"type": "monetary", "amount": 20000, "currency": "GBP"})
    html = page_of(signed_in(Role.GOVERNANCE_REVIEWER).get("/admin/?reason=CONSEQUENCE_EXCEEDS_LIMIT"))
    assert review_page_url(high) in html and review_page_url(low) not in html


def test_the_inbox_reads_in_a_fixed_number_of_queries(demo, make_person, django_assert_max_num_queries):
    for _ in range(12):
        submit(demo)
    request = RequestFactory().get("/admin/")
    request.user = make_person(roles=[Role.GOVERNANCE_REVIEWER])
    # Roles, the waiting groups, one page of envelopes, their surfaces and agents.
    with django_assert_max_num_queries(5):
        inbox = inbox_context(request)["inbox"]
    assert len(inbox["cards"]) == inbox["total"] == 12


def test_a_person_without_a_role_sees_why_there_is_no_inbox(signed_in, demo):
    submit(demo)
    html = page_of(signed_in().get("/admin/"))
    assert '<article class="inbox-card' not in html and "The inbox is for people holding" in html


def test_the_review_page_shows_the_sections_and_a_valid_chain(signed_in, escalation):
    response = signed_in(Role.GOVERNANCE_REVIEWER).get(review_page_url(escalation))
    assert response.status_code == 200
    html = page_of(response)
    for section in ("Identity", "Submitted", "Resolved authority", "Evaluation", "Integrity", "Audit chain"):
        assert section in html
    assert "Chain intact." in html and "ESCALATION_PENDING" in html
    assert 'id="review-approve"' in html and 'id="review-reject"' in html
    assert "Raw envelope JSON" in html


def test_the_envelope_change_page_is_the_review_page(signed_in, escalation):
    response = signed_in(Role.PLATFORM_VIEWER).get(f"/admin/envelopes/envelope/{escalation.pk}/change/")
    assert response.status_code == 302 and response["Location"] == review_page_url(escalation)


def test_a_viewer_sees_the_review_page_but_not_the_buttons_and_cannot_post(signed_in, escalation):
    client = signed_in(Role.PLATFORM_VIEWER)
    html = page_of(client.get(review_page_url(escalation)))
    assert 'id="review-form"' not in html and "Deciding escalations needs" in html
    assert client.post(review_page_url(escalation), {"decision": "approve"}).status_code == 403
    assert Envelope.objects.get(pk=escalation.pk).state == "awaiting_review"


def test_approving_in_the_admin_closes_the_envelope_through_the_service(signed_in, escalation):
    client = signed_in(Role.GOVERNANCE_REVIEWER, username="rev")
    response = client.post(review_page_url(escalation), {"decision": "approve", "notes": "ok"}, follow=True)
    assert "Approved. The envelope is closed" in page_of(response)
    envelope = Envelope.objects.get(pk=escalation.pk)
    assert (envelope.state, envelope.review_decision, envelope.reviewer_id) == ("closed", "APPROVED", "rev")
    assert valid_chain(envelope)
    assert "Approved</strong> by <strong>rev" in page_of(response)


def test_rejecting_in_the_admin_needs_notes(signed_in, escalation):
    client = signed_in(Role.GOVERNANCE_REVIEWER)
    response = client.post(review_page_url(escalation), {"decision": "reject", "notes": "  "})
    assert response.status_code == 400 and "Say why you reject it" in page_of(response)
    assert Envelope.objects.get(pk=escalation.pk).state == "awaiting_review"
    client.post(review_page_url(escalation), {"decision": "reject", "notes": "wrong account"})
    assert Envelope.objects.get(pk=escalation.pk).review_decision == "REJECTED"


def test_a_card_decided_elsewhere_shows_who_decided_instead_of_deciding_twice(signed_in, escalation, organization):
    review_envelope(organization, escalation.pk, "approve", "first-person", notes="fine")
    client = signed_in(Role.GOVERNANCE_REVIEWER)
    response = client.post(review_page_url(escalation), {"decision": "reject", "notes": "no"}, follow=True)
    html = page_of(response)
    assert "was not recorded" in html and "approved by first-person" in html
    assert 'id="review-form"' not in html
    assert Envelope.objects.get(pk=escalation.pk).review_decision == "APPROVED"


def test_the_envelope_list_is_read_only_and_filters_by_state(signed_in, demo):
    waiting = submit(demo)
    accepted = submit(demo, confidence=0.99)
    client = signed_in(Role.PLATFORM_VIEWER)
    html = page_of(client.get("/admin/envelopes/envelope/?state__exact=awaiting_review"))
    assert str(waiting.pk)[:8] in html and str(accepted.pk)[:8] not in html
    assert page_of(client.get(f"/admin/envelopes/envelope/?q={accepted.request_id}")).count(str(accepted.pk)[:8]) >= 1
    assert client.get("/admin/envelopes/envelope/add/").status_code == 403


def test_a_tampered_chain_shows_broken_on_the_review_page(signed_in, escalation):
    events = list(AuditEvent.objects.filter(chain_id=escalation.chain_id).order_by("sequence_no"))
    _tamper("UPDATE evidence_auditevent SET payload = %s WHERE id = %s", ['{"passed": true}', _pk(events[6])])
    html = page_of(signed_in(Role.PLATFORM_VIEWER).get(review_page_url(escalation)))
    assert "Chain broken" in html and "at event 7" in html and "event_hash_mismatch" in html
    assert 'class="review-broken-row"' in html


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [({"confidence": 0.99}, "WITHIN_AUTHORITY"), ({"surface_id": "surf-nothing"}, "SURFACE_NOT_FOUND")],
)
def test_envelopes_that_never_waited_have_a_page_with_nothing_to_decide(signed_in, demo, overrides, reason):
    envelope = submit(demo, **overrides)
    assert envelope.reason_code == reason
    response = signed_in(Role.GOVERNANCE_REVIEWER).get(review_page_url(envelope))
    assert response.status_code == 200
    html = page_of(response)
    assert "Nothing to review" in html and 'id="review-form"' not in html and "Chain intact." in html
