"""``GET /v1/audit/events``: the gate's ledger events, filtered, newest first, LatchGate's
flat shape; and ``gate_event``, the draft the pipeline appends."""

from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection
from drf_spectacular.generators import SchemaGenerator
from drf_spectacular.validation import validate_schema

from evidence.services.chain import EventDraft, append_events, draft_rows, store_rows
from evidence.services.gate_events import GateEventFilter, gate_event, gate_events
from evidence.services.verification import verify_ledger
from governance.choices import Role

pytestmark = pytest.mark.django_db

T0 = datetime(2026, 4, 18, 9, 0, tzinfo=UTC)


def record(*specs):
    """Gate events, one chain (trace) each: (minute after T0, trace, action, principal,
    session, decision[, event type]). Stored in one append, in the order given."""
    rows = []
    for minute, trace, action, principal, session, decision, *kind in specs:
        draft = gate_event(
            kind[0] if kind else "GATE_ACTION_CALL",
            trace_id=trace,
            action_id=action,
            principal=principal,
            session_id=session,
            decision=decision,
            reason="" if decision == "allow" else f"{decision} for a reason",
        )
        draft.occurred_at = T0 + timedelta(minutes=minute)
        rows += draft_rows(trace, [draft])
    return store_rows(rows)


@pytest.fixture
def ledger():
    append_events("env-1", [EventDraft("ENVELOPE_CREATED", {"trace_id": "trc_a", "decision": "allow"})])
    return record(
        (0, "trc_a", "http_fetch", "agent-1", "ses_1", "allow", "GATE_LEASE_ISSUED"),
        (1, "trc_b", "http_fetch", "agent-1", "ses_1", "allow"),
        (2, "trc_c", "http_post", "agent-1", "ses_1", "deny"),
        (3, "trc_d", "http_post", "agent-2", "ses_2", "pending_approval"),
        (4, "trc_e", "fs_read", "agent-2", "ses_2", "error"),
        (5, "trc_f", "http_fetch", "agent-3", "ses_3", "allow"),
    )


@pytest.fixture
def operator(client_with):
    return client_with(Role.PLATFORM_OPERATOR)


def traces(response) -> list[str]:
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["count"] == len(body["events"])
    return [event["trace_id"] for event in body["events"]]


def test_lists_only_gate_events_newest_first(operator, ledger):
    assert traces(operator.get("/v1/audit/events")) == ["trc_f", "trc_e", "trc_d", "trc_c", "trc_b", "trc_a"]


@pytest.mark.parametrize(
    "query, expected",
    [
        ("trace_id=trc_c", ["trc_c"]),
        ("action_id=http_fetch", ["trc_f", "trc_b", "trc_a"]),
        ("principal=agent-2", ["trc_e", "trc_d"]),
        ("session_id=ses_1", ["trc_c", "trc_b", "trc_a"]),
        ("decision=allow", ["trc_f", "trc_b", "trc_a"]),
        ("decision=deny", ["trc_c"]),
        ("decision=error", ["trc_e"]),
        ("decision=pending_approval", ["trc_d"]),
        ("decision=allow_unverified", []),
        ("action_id=http_fetch&decision=allow&principal=agent-1", ["trc_b", "trc_a"]),
        ("session_id=ses_2&decision=deny", []),
        ("trace_id=trc_unknown", []),
        ("event_type=lease_issued", ["trc_a"]),
        ("event_type=GATE_LEASE_ISSUED", ["trc_a"]),
        ("event_type=action_call&principal=agent-1", ["trc_c", "trc_b"]),
        ("trace_id=&action_id=", ["trc_f", "trc_e", "trc_d", "trc_c", "trc_b", "trc_a"]),
    ],
)
def test_filters(operator, ledger, query, expected):
    assert traces(operator.get(f"/v1/audit/events?{query}")) == expected


def test_after_and_before_are_exclusive_iso_8601_bounds(operator, ledger):
    # 09:02 is trc_c's moment: neither bound includes it.
    assert traces(operator.get("/v1/audit/events?after=2026-04-18T09:02:00Z")) == ["trc_f", "trc_e", "trc_d"]
    assert traces(operator.get("/v1/audit/events?before=2026-04-18T09:02:00Z")) == ["trc_b", "trc_a"]
    both = "/v1/audit/events?after=2026-04-18T09:00:30Z&before=2026-04-18T09:04:00Z"
    assert traces(operator.get(both)) == ["trc_d", "trc_c", "trc_b"]
    # An offset, and a timestamp without one (UTC), name the same moments.
    assert traces(operator.get("/v1/audit/events?after=2026-04-18T11:02:00%2B02:00")) == ["trc_f", "trc_e", "trc_d"]
    assert traces(operator.get("/v1/audit/events?after=2026-04-18T09:02:00")) == ["trc_f", "trc_e", "trc_d"]
    assert traces(operator.get("/v1/audit/events?after=2026-04-18T09:02:00.000001Z&before=2026-04-18")) == []


def test_limit_defaults_to_100_and_is_capped_at_1000(operator):
    record(*((n / 1000, f"trc_{n:05d}", "http_fetch", "agent-1", "ses_1", "allow") for n in range(1002)))
    assert len(traces(operator.get("/v1/audit/events"))) == 100
    newest = traces(operator.get("/v1/audit/events?limit=5000"))
    assert len(newest) == 1000 and newest[0] == "trc_01001" and newest[-1] == "trc_00002"
    assert traces(operator.get("/v1/audit/events?limit=3")) == ["trc_01001", "trc_01000", "trc_00999"]
    assert traces(operator.get("/v1/audit/events?limit=0")) == ["trc_01001"]


def test_events_of_the_same_moment_are_in_reverse_ledger_order(operator):
    record(
        (0, "trc_first", "http_fetch", "agent-1", "ses_1", "allow"),
        (0, "trc_second", "http_fetch", "agent-1", "ses_1", "allow"),
        (0, "trc_third", "http_fetch", "agent-1", "ses_1", "allow"),
    )
    assert traces(operator.get("/v1/audit/events")) == ["trc_third", "trc_second", "trc_first"]


def test_an_event_is_latchgates_flat_shape_plus_its_ledger_fields(operator, ledger):
    event = operator.get("/v1/audit/events?trace_id=trc_c").json()["events"][0]
    stored = ledger[2]
    assert event == {
        "trace_id": "trc_c",
        "action_id": "http_post",
        "principal": "agent-1",
        "session_id": "ses_1",
        "decision": "deny",
        "reason": "deny for a reason",
        "timestamp": "2026-04-18T09:02:00.000000Z",
        "event_type": "action_call",
        "id": str(stored.id),
        "chain_id": "trc_c",
        "sequence_no": 1,
        "ledger_seq": stored.ledger_seq,
        "performer_type": "system",
        "performer_id": "mandate",
        "hash": stored.hash,
        "prev_hash": "",
    }
    assert verify_ledger().valid


@pytest.mark.parametrize(
    "query, reason",
    [
        ("decision=maybe", "decision must be one of"),
        ("limit=ten", "limit must be an integer"),
        ("after=yesterday", "after must be an ISO 8601 timestamp"),
        ("before=2026-13-01T00:00:00Z", "before must be an ISO 8601 timestamp"),
        ("trace_id=trc%00x", "trace_id holds control characters"),
        ("event_type=action-call", "event_type is a gate event type"),
    ],
)
def test_bad_parameters_are_400_invalid_request(operator, query, reason):
    response = operator.get(f"/v1/audit/events?{query}")
    assert response.status_code == 400
    body = response.json()
    assert body["error"] == "invalid_request" and body["reason"].startswith(reason)


def test_needs_an_operator_or_admin(client, client_with, ledger):
    assert client.get("/v1/audit/events").status_code == 401
    assert client_with(Role.PLATFORM_VIEWER).get("/v1/audit/events").status_code == 403
    assert len(traces(client_with(Role.PLATFORM_ADMIN).get("/v1/audit/events"))) == 6


def test_a_page_is_one_query(ledger, django_assert_num_queries):
    with django_assert_num_queries(1):
        assert len(gate_events(GateEventFilter(action_id="http_fetch", decision="allow", limit=2))) == 2


@pytest.mark.postgres
@pytest.mark.parametrize(
    "query, index",
    [
        (GateEventFilter(trace_id="trc_a"), "evidence_gate_trace_idx"),
        (GateEventFilter(session_id="ses_1"), "evidence_gate_session_idx"),
        (GateEventFilter(action_id="http_fetch"), "evidence_gate_action_idx"),
        (GateEventFilter(principal="agent-1"), "evidence_gate_principal_idx"),
        (GateEventFilter(decision="deny"), "evidence_gate_decision_idx"),
    ],
)
def test_each_filter_can_read_its_partial_index(ledger, query, index):
    """The filter's expression and the gate-event condition match the index's, so Postgres can
    answer from it (with sequential scans off: on a table this small it would rather scan)."""
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as captured:
        gate_events(query)
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")
        cursor.execute("EXPLAIN " + captured.captured_queries[-1]["sql"])
        plan = "\n".join(line for (line,) in cursor.fetchall())
    assert index in plan, plan


def test_gate_event_drafts_what_the_pipeline_appends():
    draft = gate_event(
        "GATE_APPROVAL_GRANTED",
        trace_id="trc_x",
        action_id="http_post",
        principal="agent-1",
        session_id="ses_x",
        decision="allow",
        performer_type="operator",
        performer_id="alice",
        approval_id="apr_1",
        receipt_id="rcpt_1",
    )
    assert (draft.event_type, draft.performer_type, draft.performer_id) == (
        "GATE_APPROVAL_GRANTED",
        "operator",
        "alice",
    )
    assert draft.payload == {
        "trace_id": "trc_x",
        "action_id": "http_post",
        "principal": "agent-1",
        "session_id": "ses_x",
        "decision": "allow",
        "approval_id": "apr_1",
        "receipt_id": "rcpt_1",
    }
    admin = gate_event(
        "GATE_ADMIN_DRAIN", trace_id="trc_y", action_id=None, principal="alice", session_id=None, decision=None
    )
    assert admin.payload["action_id"] is None and admin.payload["decision"] is None


@pytest.mark.parametrize(
    "event_type, fields",
    [
        ("ACTION_CALL", {}),
        ("GATE_action_call", {}),
        ("GATE_ACTION_CALL", {"decision": "perhaps"}),
        ("GATE_ACTION_CALL", {"hash": "x"}),
        ("GATE_ACTION_CALL", {"timestamp": "now"}),
    ],
)
def test_gate_event_refuses_what_the_listing_could_not_show(event_type, fields):
    base = {"trace_id": "trc", "action_id": "a", "principal": "p", "session_id": "s", "decision": "allow"}
    with pytest.raises(ValueError):
        gate_event(event_type, **{**base, **fields})


def test_the_gate_endpoints_are_in_a_valid_openapi_schema():
    schema = SchemaGenerator().get_schema(request=None, public=True)
    validate_schema(schema)
    for path in ("/v1/audit/events", "/v1/receipts/{receipt_id}", "/v1/receipt-keys"):
        assert schema["paths"][path]["get"]["tags"] == ["gate"], path
    parameters = {p["name"] for p in schema["paths"]["/v1/audit/events"]["get"]["parameters"]}
    assert {"trace_id", "action_id", "principal", "session_id", "decision", "after", "before", "limit"} <= parameters
    receipt = schema["paths"]["/v1/receipts/{receipt_id}"]["get"]["responses"]["200"]["content"]["application/json"]
    assert receipt["schema"]["$ref"].endswith("/Receipt")
    assert schema["paths"]["/v1/receipt-keys"]["get"]["security"] == [{}]  # no authentication
    assert {"bearerToken": []} in schema["paths"]["/v1/receipts/{receipt_id}"]["get"]["security"]
