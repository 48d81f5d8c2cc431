"""Envelope reads: GET /v1/envelopes[/{id}], /v1/escalations, /v1/decisions/request/{id}."""

import base64
import json
import re
import uuid
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from envelopes.evaluation.engine import EvaluationRequest, evaluate
from envelopes.evaluation.reviews import review_envelope
from envelopes.models import Envelope
from envelopes.representation import envelope_representation
from envelopes.services.queries import PLAIN_LIST_CAP
from governance.choices import Role
from governance.services.people import ensure_organization
from tests.factories import declare_demo_authority as activate_demo

pytestmark = pytest.mark.django_db

RFC3339_UTC = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z$")


@pytest.fixture
def viewer(client_with):
    return client_with(Role.PLATFORM_VIEWER)


def payment(**overrides) -> dict:
    body = {
        "surface_id": "surf-payment-release",
        "agent_id": "agent-payments-prod",
        "confidence": 0.95,
        "consequence": {"type": "monetary", "amount": 500, "currency": "GBP"},
        "context": {"account_id": "acc-1", "destination_country": "GB"},
    }
    body.update(overrides)
    return body


def record(organization, **overrides) -> Envelope:
    """Evaluate through the real service and return the envelope it recorded."""
    body = payment(**overrides)
    request = EvaluationRequest(
        surface_id=body["surface_id"],
        agent_id=body["agent_id"],
        confidence=body["confidence"],
        request_source=body.get("request_source", "api"),
        request_id=body.get("request_id", ""),
        consequence=body.get("consequence"),
        context=body.get("context") or {},
    )
    response = evaluate(organization, request, json.dumps(body), performer_id="t")
    return Envelope.objects.get(pk=response["envelope_id"])


def ids(items) -> list[str]:
    return [item["identity"]["id"] for item in items]


# --- the envelope object ------------------------------------------------------------------------


def test_envelope_has_every_field_of_the_five_sections(viewer, demo):
    envelope = record(demo, request_id="req-full", request_source="payments")
    body = viewer.get(f"/v1/envelopes/{envelope.pk}").json()

    assert set(body) == {
        "identity",
        "submitted",
        "resolved",
        "evaluation",
        "integrity",
        "state",
        "created_at",
        "updated_at",
        "closed_at",
    }
    assert body["identity"] == {
        "id": str(envelope.pk),
        "request_source": "payments",
        "request_id": "req-full",
        "schema_version": 1,
    }
    assert set(body["submitted"]) == {"raw", "received_at"}
    assert body["submitted"]["raw"]["request_id"] == "req-full"
    assert set(body["resolved"]) == {"authority", "structure"}
    assert body["resolved"]["authority"] == {
        "surface_id": "surf-payment-release",
        "surface_version": 1,
        "profile_id": "prof-payments-standard",
        "profile_version": 1,
        "agent_id": "agent-payments-prod",
        "grant_id": "grant-payments-agent-standard",
    }
    structure = body["resolved"]["structure"]
    assert set(structure) == {"process", "business_service", "capabilities"}
    assert structure["process"]["id"] == "proc-payment-release"
    assert structure["business_service"]["id"] == "bs-payments"
    assert [c["id"] for c in structure["capabilities"]] == ["cap-money-movement"]
    evaluation = body["evaluation"]
    assert set(evaluation) == {"outcome", "reason_code", "evaluated_at", "explanation"}
    assert (evaluation["outcome"], evaluation["reason_code"]) == ("accept", "WITHIN_AUTHORITY")
    assert {
        "confidence_provided",
        "confidence_threshold",
        "consequence_provided",
        "consequence_threshold",
        "policy_evaluated",
        "policy_reference",
    } <= set(evaluation["explanation"])
    assert evaluation["explanation"]["confidence_provided"] == 0.95
    assert body["integrity"] == {
        "audit_event_ids": envelope.audit_event_ids,
        "first_event_hash": envelope.first_event_hash,
        "final_event_hash": envelope.final_event_hash,
        "submitted_hash": envelope.submitted_hash,
    }
    assert len(body["integrity"]["audit_event_ids"]) == 11
    assert body["state"] == "closed"
    for moment in (
        body["submitted"]["received_at"],
        evaluation["evaluated_at"],
        body["created_at"],
        body["updated_at"],
        body["closed_at"],
    ):
        assert RFC3339_UTC.match(moment), moment


def test_submitted_raw_is_the_request_json_in_its_original_key_order(client_with, viewer, demo):
    operator = client_with(Role.PLATFORM_OPERATOR)
    sent = {
        "request_id": "req-order",
        "surface_id": "surf-payment-release",
        "context": {"zeta": 1, "account_id": "a", "destination_country": "GB"},
        "agent_id": "agent-payments-prod",
        "confidence": 0.95,
    }
    raw = json.dumps(sent)
    envelope_id = operator.post("/v1/evaluate", raw, content_type="application/json").json()["envelope_id"]

    body = viewer.get(f"/v1/envelopes/{envelope_id}").json()
    assert body["submitted"]["raw"] == sent
    assert list(body["submitted"]["raw"]) == list(sent)
    assert list(body["submitted"]["raw"]["context"]) == ["zeta", "account_id", "destination_country"]


def test_submitted_raw_that_is_not_json_stays_a_string(demo):
    request = EvaluationRequest(surface_id="surf-payment-release", agent_id="agent-payments-prod", confidence=0.9)
    envelope_id = evaluate(demo, request, "not json {", performer_id="t")["envelope_id"]
    envelope = Envelope.objects.get(pk=envelope_id)
    assert envelope_representation(envelope)["submitted"]["raw"] == "not json {"


def test_escalated_envelope_awaits_review_with_no_review_section(viewer, demo):
    envelope = record(demo, confidence=0.5)
    body = viewer.get(f"/v1/envelopes/{envelope.pk}").json()
    assert body["state"] == "awaiting_review"
    assert body["closed_at"] is None
    assert body["evaluation"]["outcome"] == "escalate"
    assert "review" not in body


def test_reviewed_envelope_carries_the_review(viewer, demo):
    envelope = record(demo, confidence=0.5)
    review_envelope(demo, envelope.pk, "approve", "alice", notes="checked by phone")

    body = viewer.get(f"/v1/envelopes/{envelope.pk}").json()
    assert body["state"] == "closed"
    assert body["evaluation"]["outcome"] == "escalate"
    review = body["review"]
    assert set(review) == {"decision", "reviewer_id", "reviewer_kind", "notes", "reviewed_at"}
    assert review["decision"] == "APPROVED"
    assert review["reviewer_id"] == "alice"
    assert review["notes"] == "checked by phone"
    assert RFC3339_UTC.match(review["reviewed_at"])
    assert body["integrity"]["final_event_hash"] == Envelope.objects.get(pk=envelope.pk).final_event_hash


def test_rejected_before_resolution_has_empty_authority_and_structure(viewer, demo):
    envelope = record(demo, agent_id="agent-nobody")
    body = viewer.get(f"/v1/envelopes/{envelope.pk}").json()
    assert body["evaluation"]["reason_code"] == "AGENT_NOT_FOUND"
    assert body["resolved"]["authority"]["grant_id"] == ""
    assert body["resolved"]["authority"]["profile_version"] is None
    assert set(body["resolved"]["structure"]) == {"process", "business_service", "capabilities"}


# --- single envelope ----------------------------------------------------------------------------


def test_envelope_id_that_is_not_a_uuid_is_400(viewer, demo):
    response = viewer.get("/v1/envelopes/not-a-uuid")
    assert response.status_code == 400
    assert response.json() == {"error": "invalid envelope id"}


def test_unknown_envelope_is_404(viewer, demo):
    response = viewer.get(f"/v1/envelopes/{uuid.uuid4()}")
    assert response.status_code == 404
    assert response.json() == {"error": "envelope not found"}


# --- lists --------------------------------------------------------------------------------------


def test_list_is_a_plain_array_newest_first(viewer, demo):
    first, second, third = (record(demo) for _ in range(3))
    response = viewer.get("/v1/envelopes")
    assert response.status_code == 200
    assert ids(response.json()) == [str(third.pk), str(second.pk), str(first.pk)]
    assert "X-Mandate-Truncated" not in response


def test_list_filters_by_state(viewer, demo):
    closed = record(demo)
    waiting = record(demo, confidence=0.5)
    assert ids(viewer.get("/v1/envelopes?state=closed").json()) == [str(closed.pk)]
    assert ids(viewer.get("/v1/envelopes?state=awaiting_review").json()) == [str(waiting.pk)]
    assert viewer.get("/v1/envelopes?state=received").json() == []
    assert len(viewer.get("/v1/envelopes?state=").json()) == 2


def test_invalid_state_is_400(viewer, demo):
    response = viewer.get("/v1/envelopes?state=open")
    assert response.status_code == 400
    assert response.json()["error"].startswith("invalid state")


def test_list_filters_by_agent_surface_and_outcome(viewer, demo):
    accepted = record(demo)
    escalated = record(demo, confidence=0.5)
    unknown_agent = record(demo, agent_id="agent-nobody")
    loan = record(demo, surface_id="surf-loan-approval")

    assert set(ids(viewer.get("/v1/envelopes?agent_id=agent-nobody").json())) == {str(unknown_agent.pk)}
    assert set(ids(viewer.get("/v1/envelopes?surface_id=surf-loan-approval").json())) == {str(loan.pk)}
    assert ids(viewer.get("/v1/envelopes?outcome=accept").json()) == [str(accepted.pk)]
    assert ids(viewer.get("/v1/envelopes?outcome=escalate&agent_id=agent-payments-prod").json()) == [str(escalated.pk)]
    assert viewer.get("/v1/envelopes?outcome=maybe").status_code == 400


def test_list_filters_by_time_window(viewer, demo):
    old, middle, new = (record(demo) for _ in range(3))
    base = timezone.now() - timedelta(days=10)
    Envelope.objects.filter(pk=old.pk).update(created_at=base)
    Envelope.objects.filter(pk=middle.pk).update(created_at=base + timedelta(days=5))

    since = (base + timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    until = (base + timedelta(days=6)).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert ids(viewer.get(f"/v1/envelopes?since={since}").json()) == [str(new.pk), str(middle.pk)]
    assert ids(viewer.get(f"/v1/envelopes?until={until}").json()) == [str(middle.pk), str(old.pk)]
    assert ids(viewer.get(f"/v1/envelopes?since={since}&until={until}").json()) == [str(middle.pk)]


@pytest.mark.parametrize(
    "query",
    ["since=yesterday", "until=2026-01-01", "since=2026-01-01T00:00:00", "until=2026-13-01T00:00:00Z"],
)
def test_invalid_time_bound_is_400(viewer, demo, query):
    response = viewer.get(f"/v1/envelopes?{query}")
    assert response.status_code == 400
    assert "RFC 3339" in response.json()["error"]


@pytest.mark.parametrize("query", ["agent_id=a%00b", "surface_id=s%01x", f"agent_id={'a' * 256}"])
def test_id_filter_with_control_characters_or_too_long_is_400(viewer, demo, query):
    response = viewer.get(f"/v1/envelopes?{query}")
    assert response.status_code == 400
    assert set(response.json()) == {"error"}


def test_escalations_lists_only_envelopes_awaiting_review(viewer, demo):
    record(demo)
    first = record(demo, confidence=0.5)
    second = record(demo, consequence={"type": "monetary", "amount": 20000, "currency": "GBP"})
    reviewed = record(demo, confidence=0.4)
    review_envelope(demo, reviewed.pk, "reject", "alice")

    response = viewer.get("/v1/escalations")
    assert response.status_code == 200
    assert ids(response.json()) == [str(second.pk), str(first.pk)]
    assert all(item["state"] == "awaiting_review" for item in response.json())
    filtered = viewer.get("/v1/escalations?agent_id=agent-payments-prod&limit=1").json()
    assert ids(filtered["items"]) == [str(second.pk)]


# --- cursor pages -------------------------------------------------------------------------------


def test_cursor_pages_walk_the_whole_list_in_three_pages(viewer, demo):
    made = [record(demo) for _ in range(7)]
    newest_first = [str(e.pk) for e in reversed(made)]

    first = viewer.get("/v1/envelopes?limit=3").json()
    assert set(first) == {"items", "next_cursor"}
    second = viewer.get(f"/v1/envelopes?limit=3&cursor={first['next_cursor']}").json()
    third = viewer.get(f"/v1/envelopes?limit=3&cursor={second['next_cursor']}").json()

    assert ids(first["items"]) == newest_first[:3]
    assert ids(second["items"]) == newest_first[3:6]
    assert ids(third["items"]) == newest_first[6:]
    assert third["next_cursor"] is None


def test_cursor_resumes_exactly_when_envelopes_share_a_timestamp(viewer, demo):
    made = [record(demo, confidence=0.5) for _ in range(5)]
    Envelope.objects.filter(pk__in=[e.pk for e in made]).update(created_at=timezone.now())

    seen, cursor = [], None
    for _ in range(5):
        query = "limit=2" + (f"&cursor={cursor}" if cursor else "")
        page = viewer.get(f"/v1/escalations?{query}").json()
        seen += ids(page["items"])
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == sorted((str(e.pk) for e in made), reverse=True)


def test_new_envelopes_do_not_shift_a_cursor(viewer, demo):
    made = [record(demo) for _ in range(4)]
    first = viewer.get("/v1/envelopes?limit=2").json()
    record(demo)
    second = viewer.get(f"/v1/envelopes?limit=2&cursor={first['next_cursor']}").json()
    assert ids(second["items"]) == [str(made[1].pk), str(made[0].pk)]


def test_cursor_alone_pages_with_the_default_size(viewer, demo):
    record(demo)
    body = viewer.get("/v1/envelopes?cursor=").json()
    assert len(body["items"]) == 1 and body["next_cursor"] is None


def test_filters_apply_to_pages(viewer, demo):
    record(demo)
    waiting = [record(demo, confidence=0.5) for _ in range(3)]
    page = viewer.get("/v1/envelopes?state=awaiting_review&limit=2").json()
    rest = viewer.get(f"/v1/envelopes?state=awaiting_review&limit=2&cursor={page['next_cursor']}").json()
    assert ids(page["items"]) + ids(rest["items"]) == [str(e.pk) for e in reversed(waiting)]


@pytest.mark.parametrize("limit", ["0", "501", "-1", "abc", "1.5"])
def test_limit_outside_1_to_500_is_400(viewer, demo, limit):
    response = viewer.get(f"/v1/envelopes?limit={limit}")
    assert response.status_code == 400
    assert "limit" in response.json()["error"]


@pytest.mark.parametrize(
    "cursor",
    [
        "garbage!",
        "bm90IGpzb24",  # "not json"
        base64.urlsafe_b64encode(b'["2026-01-01T00:00:00+00:00","not-a-uuid"]').decode(),
        base64.urlsafe_b64encode(json.dumps(["2026-01-01T00:00:00", str(uuid.uuid4())]).encode()).decode(),
        base64.urlsafe_b64encode(b'{"a": 1}').decode(),
    ],
)
def test_invalid_cursor_is_400(viewer, demo, cursor):
    response = viewer.get("/v1/envelopes", {"cursor": cursor})
    assert response.status_code == 400
    assert response.json() == {"error": "invalid cursor"}


def test_plain_list_is_capped_at_the_newest_and_says_so(viewer, demo, monkeypatch):
    monkeypatch.setattr("envelopes.services.queries.PLAIN_LIST_CAP", 2)
    made = [record(demo) for _ in range(3)]
    response = viewer.get("/v1/envelopes")
    assert ids(response.json()) == [str(made[2].pk), str(made[1].pk)]
    assert response["X-Mandate-Truncated"] == "true"
    assert PLAIN_LIST_CAP == 1000


@pytest.mark.parametrize("path", ["/v1/envelopes", "/v1/envelopes?limit=2", "/v1/escalations"])
def test_list_query_count_does_not_grow_with_envelopes(viewer, demo, path):
    record(demo, confidence=0.5)
    viewer.get(path)  # warm per-process caches
    with CaptureQueriesContext(connection) as few:
        assert viewer.get(path).status_code == 200
    for _ in range(5):
        record(demo, confidence=0.5)
    with CaptureQueriesContext(connection) as many:
        assert viewer.get(path).status_code == 200
    # the token (with its person's organization), one page of envelopes
    assert len(many) == len(few) == 2, [q["sql"] for q in many.captured_queries]


# --- decisions by request scope -----------------------------------------------------------------


def test_decision_by_request_returns_the_envelope(viewer, demo):
    envelope = record(demo, request_id="req-00512", request_source="lending-service")
    response = viewer.get("/v1/decisions/request/req-00512?source=lending-service")
    assert response.status_code == 200
    assert response.json() == viewer.get(f"/v1/envelopes/{envelope.pk}").json()


def test_decision_source_defaults_to_api(viewer, demo):
    envelope = record(demo, request_id="req-1")
    record(demo, request_id="req-1", request_source="other")
    assert viewer.get("/v1/decisions/request/req-1").json()["identity"]["id"] == str(envelope.pk)
    assert viewer.get("/v1/decisions/request/req-1?source=").json()["identity"]["id"] == str(envelope.pk)


def test_unknown_decision_is_404(viewer, demo):
    record(demo, request_id="req-1", request_source="payments")
    response = viewer.get("/v1/decisions/request/req-1")  # scope "api"
    assert response.status_code == 404
    assert response.json() == {"error": "decision not found"}
    assert viewer.get("/v1/decisions/request/req-unknown?source=payments").status_code == 404


@pytest.mark.parametrize(
    "path",
    [
        "/v1/decisions/request/",
        "/v1/decisions/request/a/b",
        "/v1/decisions/request/a%2Fb",
        "/v1/decisions/request/a%5Cb",
        "/v1/decisions/request/a%00b",
        "/v1/decisions/request/a%0Ab",
        "/v1/decisions/request/a%7Fb",
        f"/v1/decisions/request/{'r' * 256}",
        "/v1/decisions/request/req-1?source=a%2Fb",
        f"/v1/decisions/request/req-1?source={'s' * 256}",
    ],
)
def test_invalid_request_id_is_400(viewer, demo, path):
    response = viewer.get(path)
    assert response.status_code == 400
    assert set(response.json()) == {"error"}


def test_request_id_of_255_characters_is_valid(viewer, demo):
    record(demo, request_id="r" * 255)
    assert viewer.get(f"/v1/decisions/request/{'r' * 255}").status_code == 200


# --- access and organization scope --------------------------------------------------------------


def test_reads_are_scoped_to_the_callers_organization(viewer, demo):
    mine = record(demo, request_id="shared-id")
    other = activate_demo(ensure_organization("globex", "Globex"))
    theirs = record(other, request_id="shared-id", confidence=0.5)

    assert ids(viewer.get("/v1/envelopes").json()) == [str(mine.pk)]
    assert theirs.state == "awaiting_review"
    assert viewer.get("/v1/escalations").json() == []
    assert viewer.get(f"/v1/envelopes/{theirs.pk}").status_code == 404
    assert viewer.get("/v1/decisions/request/shared-id").json()["identity"]["id"] == str(mine.pk)


@pytest.mark.parametrize("role", [Role.PLATFORM_VIEWER, Role.PLATFORM_OPERATOR, Role.PLATFORM_ADMIN])
def test_viewer_or_above_may_read(client_with, demo, role):
    envelope = record(demo, request_id="req-1")
    client = client_with(role)
    for path in ("/v1/envelopes", f"/v1/envelopes/{envelope.pk}", "/v1/escalations", "/v1/decisions/request/req-1"):
        assert client.get(path).status_code == 200, path


def test_reading_envelopes_needs_a_viewer_role(client_with, api_client, demo):
    envelope = record(demo)
    approver = client_with(Role.GOVERNANCE_APPROVER)
    for path in ("/v1/envelopes", f"/v1/envelopes/{envelope.pk}", "/v1/escalations", "/v1/decisions/request/x"):
        assert api_client.get(path).status_code == 401, path
        response = approver.get(path)
        assert response.status_code == 403, path
        assert response.json() == {"error": "forbidden", "required_permission": "envelopes:read"}
