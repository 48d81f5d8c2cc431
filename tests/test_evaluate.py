import threading
from datetime import timedelta

import pytest
from django.db import connection, connections
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from controlplane.models import Agent, Grant, Policy, Profile, Surface
from controlplane.services.bundles import apply_bundle
from controlplane.services.revision import bump_revision
from envelopes.evaluation.engine import EvaluationRequest, evaluate
from envelopes.models import Envelope
from evidence.models import AuditEvent
from evidence.services.verification import verify_chain, verify_ledger
from governance.choices import Role
from tests.factories import DEMO_BUNDLE as DEMO

pytestmark = pytest.mark.django_db


@pytest.fixture
def operator(client_with):
    return client_with(Role.PLATFORM_OPERATOR)


def payment(**overrides):
    body = {
        "surface_id": "surf-payment-release",
        "agent_id": "agent-payments-prod",
        "confidence": 0.95,
        "consequence": {"type": "monetary", "amount": 500, "currency": "GBP"},
        "context": {"account_id": "acc-1", "destination_country": "GB"},
    }
    body.update(overrides)
    return body


def call(client, body):
    return client.post("/v1/evaluate", body, format="json")


def test_within_authority_is_accepted_and_the_envelope_closes(operator, demo):
    response = call(operator, payment(request_id="req-1", request_source="payments"))
    assert response.status_code == 200
    body = response.json()
    assert body["outcome"] == "accept" and body["reason"] == "WITHIN_AUTHORITY"
    assert body["policy_mode"] == "rego" and body["policy_reference"] == "payments.release"
    assert body["policy_skipped"] is False
    envelope = Envelope.objects.get(pk=body["envelope_id"])
    assert envelope.state == "closed" and envelope.closed_at is not None
    events = list(AuditEvent.objects.filter(chain_id=str(envelope.pk)).order_by("sequence_no"))
    assert [e.event_type for e in events] == [
        "ENVELOPE_CREATED",
        "EVALUATION_STARTED",
        "SURFACE_RESOLVED",
        "AGENT_RESOLVED",
        "AUTHORITY_CHAIN_RESOLVED",
        "CONTEXT_VALIDATED",
        "CONFIDENCE_CHECKED",
        "CONSEQUENCE_CHECKED",
        "POLICY_EVALUATED",
        "OUTCOME_RECORDED",
        "ENVELOPE_CLOSED",
    ]
    assert envelope.audit_event_ids == [str(e.pk) for e in events]
    assert envelope.final_event_hash == events[-1].hash
    assert verify_chain(str(envelope.pk), expected_length=11, expected_final_hash=envelope.final_event_hash).valid
    assert envelope.structure["business_service"]["id"] == "bs-payments"
    assert envelope.structure["capabilities"] == [
        {"id": "cap-money-movement", "name": "Money Movement", "status": "active"}
    ]
    assert (envelope.grant_id, envelope.profile_id, envelope.profile_version) == (
        "grant-payments-agent-standard",
        "prof-payments-standard",
        1,
    )


@pytest.mark.parametrize(
    ("overrides", "outcome", "reason"),
    [
        ({"confidence": 0.5}, "escalate", "CONFIDENCE_BELOW_THRESHOLD"),
        (
            {"consequence": {"type": "monetary", "amount": 20000, "currency": "GBP"}},
            "escalate",
            "CONSEQUENCE_EXCEEDS_LIMIT",
        ),
        (
            {"consequence": {"type": "monetary", "amount": 5, "currency": "EUR"}},
            "escalate",
            "CONSEQUENCE_EXCEEDS_LIMIT",
        ),
        ({"consequence": {"type": "risk_rating", "risk_rating": "low"}}, "escalate", "CONSEQUENCE_EXCEEDS_LIMIT"),
        ({"context": {"account_id": "a", "destination_country": "KP"}}, "escalate", "POLICY_DENY"),
        ({"context": {"account_id": "a"}}, "request_clarification", "INSUFFICIENT_CONTEXT"),
        ({"agent_id": "agent-nobody"}, "reject", "AGENT_NOT_FOUND"),
        ({"surface_id": "surf-nothing"}, "reject", "SURFACE_NOT_FOUND"),
        ({"agent_id": "agent-loan-copilot"}, "reject", "GRANT_PROFILE_SURFACE_MISMATCH"),
    ],
)
def test_every_outcome_reason_code(operator, demo, overrides, outcome, reason):
    body = call(operator, payment(**overrides)).json()
    assert (body["outcome"], body["reason"]) == (outcome, reason)
    envelope = Envelope.objects.get(pk=body["envelope_id"])
    assert envelope.state == ("awaiting_review" if outcome == "escalate" else "closed")
    assert verify_chain(str(envelope.pk), expected_final_hash=envelope.final_event_hash).valid


def test_consequence_without_submission_passes(operator, demo):
    assert call(operator, payment(consequence=None)).json()["outcome"] == "accept"


def test_surface_with_no_active_version_is_inactive(operator, demo):
    Surface.objects.filter(key="surf-payment-release").update(status="review")
    bump_revision(demo)
    assert call(operator, payment()).json()["reason"] == "SURFACE_INACTIVE"


def test_new_review_version_does_not_take_an_active_surface_dark(operator, demo):
    current = Surface.objects.get(key="surf-payment-release")
    current.pk, current.version, current.status = None, 2, "review"
    current.save()
    bump_revision(demo)
    assert call(operator, payment()).json()["outcome"] == "accept"


@pytest.mark.parametrize("state", ["suspended", "revoked"])
def test_blocked_agent_is_rejected(operator, demo, state):
    Agent.objects.filter(key="agent-payments-prod").update(operational_state=state)
    bump_revision(demo)
    assert call(operator, payment()).json()["reason"] == "AGENT_OPERATIONAL_STATE_BLOCKED"


def test_grant_states_and_dates_matter(operator, demo):
    Grant.objects.filter(key="grant-payments-agent-standard").update(status="suspended")
    bump_revision(demo)
    assert call(operator, payment()).json()["reason"] == "NO_ACTIVE_GRANT"
    Grant.objects.filter(key="grant-payments-agent-standard").update(
        status="active", effective_until=timezone.now() - timedelta(seconds=1)
    )
    bump_revision(demo)
    assert call(operator, payment()).json()["reason"] == "NO_ACTIVE_GRANT"


def test_grant_without_an_active_profile_is_profile_not_found(operator, demo):
    Profile.objects.filter(key="prof-payments-standard").update(status="deprecated")
    bump_revision(demo)
    assert call(operator, payment()).json()["reason"] == "PROFILE_NOT_FOUND"


def test_policy_error_fails_closed_or_open(operator, demo):
    Policy.objects.all().delete()
    bump_revision(demo)
    assert call(operator, payment()).json()["reason"] == "POLICY_ERROR"
    Profile.objects.filter(key="prof-payments-standard").update(fail_mode="open")
    bump_revision(demo)
    assert call(operator, payment()).json()["outcome"] == "accept"


def test_same_request_replays_the_stored_response_without_writes(operator, demo):
    first = call(operator, payment(request_id="r-1", request_source="svc"))
    events = AuditEvent.objects.count()
    second = call(operator, payment(request_id="r-1", request_source="svc"))
    assert second.status_code == 200 and second.json() == first.json()
    assert AuditEvent.objects.count() == events and Envelope.objects.count() == 1


def test_same_request_id_with_a_different_payload_is_409(operator, demo):
    call(operator, payment(request_id="r-1"))
    response = call(operator, payment(request_id="r-1", confidence=0.9))
    assert response.status_code == 409
    assert set(response.json()) == {"error"}


def test_request_id_is_scoped_by_source(operator, demo):
    a = call(operator, payment(request_id="r-1", request_source="a")).json()
    b = call(operator, payment(request_id="r-1", request_source="b")).json()
    assert a["envelope_id"] != b["envelope_id"]


@pytest.mark.parametrize(
    ("body", "error"),
    [
        ({"agent_id": "a", "confidence": 0.5}, "surface_id: This field is required."),
        ({"surface_id": "s", "confidence": 0.5}, "agent_id: This field is required."),
        (payment(confidence=1.5), "confidence: Ensure this value is less than or equal to 1.0."),
        (payment(confidence="0.9"), "confidence: A valid number is required."),
        (payment(request_id="a/b"), "request_id: must not contain '/', '\\' or control characters"),
        (payment(request_id="a\\b"), "request_id: must not contain '/', '\\' or control characters"),
        (payment(request_id="a\nb"), "request_id: must not contain '/', '\\' or control characters"),
        (payment(request_id="x" * 256), "request_id: Ensure this field has no more than 255 characters."),
        (payment(extra="field"), "extra: unknown field"),
        (payment(consequence={"type": "unknown"}), 'consequence.type: "unknown" is not a valid choice.'),
        (payment(consequence={"type": "monetary"}), "consequence.amount: required for a monetary consequence"),
        (payment(context="not an object"), 'context: Expected a dictionary of items but got type "str".'),
        (payment(process_id="proc-nothing"), "process 'proc-nothing' not found"),
        (
            payment(process_id="proc-loan-origination"),
            "surface 'surf-payment-release' does not belong to process 'proc-loan-origination'",
        ),
        (
            {"surface_id": " ", "agent_id": 7, "confidence": None, "consequence": {"type": "monetary", "x": 1}},
            "surface_id: This field may not be blank.; confidence: This field may not be null.; "
            "consequence.x: unknown field",
        ),
    ],
)
def test_bad_requests_are_400(operator, demo, body, error):
    response = call(operator, body)
    assert response.status_code == 400, response.content
    assert response.json() == {"error": error}
    assert not Envelope.objects.exists()


def test_malformed_and_trailing_json_is_400(operator, demo):
    for raw, error in (
        ('{"surface_id": "x",', "Expecting property name enclosed in double quotes: line 1 column 20 (char 19)"),
        ('{"surface_id": "s"} {}', "Extra data: line 1 column 21 (char 20)"),
        ('{"confidence": NaN}', "NaN is not valid JSON"),
        (
            '{"surface_id": "s", "agent_id": "a", "confidence": 0.5, "context": {"x": 1e400}}',
            "number out of range: 1e400",
        ),
    ):
        response = operator.post("/v1/evaluate", data=raw, content_type="application/json")
        assert response.status_code == 400
        assert response.json() == {"error": f"malformed request body: JSON parse error - {error}"}
    for raw, error in (("[]", "expected a JSON object"), ("null", "No data provided")):
        response = operator.post("/v1/evaluate", data=raw, content_type="application/json")
        assert (response.status_code, response.json()) == (400, {"error": error})


def test_body_over_1_mib_is_413(operator, demo):
    response = call(operator, payment(context={"blob": "x" * (1024 * 1024)}))
    assert response.status_code == 413


def test_enforced_structural_mode_requires_process_id(operator, demo, settings):
    settings.MANDATE_STRUCTURAL_MODE = "enforced"
    assert call(operator, payment()).status_code == 400
    assert call(operator, payment(process_id="proc-payment-release")).json()["outcome"] == "accept"


def test_fields_are_trimmed(operator, demo):
    assert call(operator, payment(surface_id="  surf-payment-release ")).json()["outcome"] == "accept"


def test_evaluate_needs_operator_or_admin(client_with, demo, api_client):
    assert call(client_with(Role.PLATFORM_VIEWER), payment()).status_code == 403
    assert call(api_client, payment()).status_code == 401
    assert call(client_with(Role.PLATFORM_ADMIN), payment()).status_code == 200


def test_submitted_raw_is_verbatim(operator, demo):
    raw = (
        '{"confidence": 0.95,   "agent_id": "agent-payments-prod", "surface_id": "surf-payment-release", '
        '"context": {"account_id": "a", "destination_country": "GB"}}'
    )
    body = operator.post("/v1/evaluate", data=raw, content_type="application/json").json()
    assert Envelope.objects.get(pk=body["envelope_id"]).submitted_raw == raw


def test_control_plane_changes_apply_to_the_next_evaluation(operator, demo, organization):
    assert call(operator, payment()).json()["outcome"] == "accept"
    from controlplane.services.lifecycle import Principal, change_grant_status
    from governance.services.people import create_person

    boss = create_person(organization, "boss", roles=[Role.PLATFORM_ADMIN])
    change_grant_status(
        organization=organization,
        grant_id="grant-payments-agent-standard",
        action="suspend",
        principal=Principal.of(boss, {Role.PLATFORM_ADMIN}),
        reason="incident",
    )
    assert call(operator, payment()).json()["reason"] == "NO_ACTIVE_GRANT"


def test_service_evaluation_round_trips_stay_bounded(demo):
    request = EvaluationRequest(
        surface_id="surf-loan-approval", agent_id="agent-loan-copilot", confidence=0.95, context={"applicant_id": "a"}
    )
    evaluate(demo, request, "{}", performer_id="t")  # warm the snapshot cache
    with CaptureQueriesContext(connection) as queries:
        evaluate(
            demo,
            EvaluationRequest(
                surface_id="surf-loan-approval",
                agent_id="agent-loan-copilot",
                confidence=0.95,
                context={"applicant_id": "a"},
            ),
            "{}",
            performer_id="t",
        )
    statements = [q["sql"] for q in queries.captured_queries]
    if connection.vendor == "postgresql":  # one statement records it all (test_evaluate_fastpath.py)
        assert len(statements) == 1, statements
    else:  # revision, envelope insert, ledger lock, events insert, ledger head update
        data_statements = [s for s in statements if not s.upper().startswith(("SAVEPOINT", "RELEASE", "BEGIN"))]
        assert len(data_statements) <= 5, statements


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_concurrent_duplicates_make_one_envelope_and_no_500(client_with, organization):
    apply_bundle(organization, DEMO, actor="system:test")
    Surface.objects.update(status="active")
    Profile.objects.update(status="active")
    bump_revision(organization)
    clients = [client_with(Role.PLATFORM_OPERATOR) for _ in range(6)]
    barrier = threading.Barrier(6)
    responses = []

    def run(client):
        barrier.wait()
        responses.append(call(client, payment(request_id="dup-1", request_source="svc")))
        connections.close_all()

    threads = [threading.Thread(target=run, args=(c,)) for c in clients]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [r.status_code for r in responses] == [200] * 6
    assert len({r.json()["envelope_id"] for r in responses}) == 1
    assert Envelope.objects.count() == 1
    assert verify_ledger().valid
