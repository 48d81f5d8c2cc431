"""The fast evaluation path: the one-statement write on Postgres, the hot path in front of
Django (``governance/hotpath.py``, evaluation's declaration ``envelopes/evaluation/fastroute.py``),
the one request parser, and the pieces they rely on (canonical JSON fast path, remembered
policy decisions)."""

import asyncio
import contextlib
import json
import math
import random
import re
import threading

import httpx
import pytest
import rfc8785
from django.db import connection, connections
from django.test.utils import CaptureQueriesContext

from controlplane.models import Grant
from controlplane.services import policies
from controlplane.services.revision import bump_revision
from envelopes.evaluation.api.evaluate import EvaluateRequestSerializer
from envelopes.evaluation.engine import EvaluationRequest, evaluate, record_many
from envelopes.evaluation.fastroute import EVALUATE, answer
from envelopes.evaluation.parse import parse_evaluation
from envelopes.models import Envelope
from evidence.canonical import canonical_json, ledger_hash
from evidence.models import AuditEvent, LedgerHead
from evidence.services.verification import verify_chain, verify_ledger
from governance.api.errors import flatten_validation
from governance.choices import Role, TokenStatus
from governance.errors import Invalid
from governance.hotpath import HandOver, HotPath, render, strict_json, tokens
from governance.models import ApiToken
from governance.token_cache import StaleToken
from tests.factories import declare_demo_authority

PLAIN = {
    "surface_id": "surf-payment-release",
    "agent_id": "agent-payments-prod",
    "confidence": 0.95,
    "consequence": {"type": "monetary", "amount": 500, "currency": "GBP"},
    "context": {"account_id": "acc-1", "destination_country": "GB"},
}
group = EVALUATE.group


def serializer_answer(data) -> dict | str:
    """What the documented serializer makes of ``data``: the request's canonical form, or
    the error DRF's exception handler answered with (the view validated with it until the
    parser took over)."""
    serializer = EvaluateRequestSerializer(data=data)
    if not serializer.is_valid():
        return "; ".join(flatten_validation(serializer.errors)) or "invalid request"
    data = serializer.validated_data
    return EvaluationRequest(
        surface_id=data["surface_id"],
        agent_id=data["agent_id"],
        confidence=data["confidence"],
        request_source=data.get("request_source") or "api",
        request_id=data.get("request_id") or "",
        process_id=data.get("process_id") or "",
        consequence=dict(data["consequence"]) if data.get("consequence") else None,
        context=data.get("context") or {},
    ).canonical()


def parser_answer(data) -> dict | str:
    try:
        return parse_evaluation(data).canonical()
    except Invalid as exc:
        return exc.message


def variants():
    """Bodies around the edges of what the serializer accepts."""
    yield PLAIN
    yield {**PLAIN, "confidence": 1}
    yield {**PLAIN, "confidence": 0}
    yield {**PLAIN, "confidence": 1.5}
    yield {**PLAIN, "confidence": -0.1}
    yield {**PLAIN, "confidence": True}
    yield {**PLAIN, "confidence": "0.9"}
    yield {**PLAIN, "confidence": None}
    yield {**PLAIN, "confidence": [0.5]}
    yield {**PLAIN, "confidence": 10**400}
    yield {k: v for k, v in PLAIN.items() if k != "confidence"}
    yield {k: v for k, v in PLAIN.items() if k != "consequence"}
    yield {k: v for k, v in PLAIN.items() if k != "context"}
    yield {"confidence": "x", "unknown": 1}
    yield {}
    yield {**PLAIN, "consequence": None}
    yield {**PLAIN, "consequence": {}}
    yield {**PLAIN, "consequence": {"type": "monetary"}}
    yield {**PLAIN, "consequence": {"type": "monetary", "amount": -1, "currency": "GBP"}}
    yield {**PLAIN, "consequence": {"type": "monetary", "amount": 10.5, "currency": ""}}
    yield {**PLAIN, "consequence": {"type": "monetary", "amount": 10, "currency": "gbp"}}
    yield {**PLAIN, "consequence": {"type": "monetary", "amount": 10, "currency": " GBP"}}
    yield {**PLAIN, "consequence": {"type": "monetary", "amount": 10, "currency": "GBPX"}}
    yield {**PLAIN, "consequence": {"type": "monetary", "amount": 10, "currency": 123}}
    yield {**PLAIN, "consequence": {"type": "monetary", "amount": 10, "currency": "G\x00P"}}
    yield {**PLAIN, "consequence": {"type": "monetary", "amount": 10, "currency": None}}
    yield {**PLAIN, "consequence": {"type": "monetary", "amount": "10", "currency": "GBP"}}
    yield {**PLAIN, "consequence": {"type": "monetary", "amount": None, "currency": "GBP"}}
    yield {**PLAIN, "consequence": {"currency": "GBP", "amount": 7, "type": "monetary"}}
    yield {**PLAIN, "consequence": {"type": "risk_rating", "risk_rating": "high"}}
    yield {**PLAIN, "consequence": {"type": "risk_rating", "risk_rating": "extreme"}}
    yield {**PLAIN, "consequence": {"type": "risk_rating", "risk_rating": None}}
    yield {**PLAIN, "consequence": {"type": "risk_rating"}}
    yield {**PLAIN, "consequence": {"type": "other", "amount": 1}}
    yield {**PLAIN, "consequence": {"type": 1, "amount": "x", "currency": []}}
    yield {**PLAIN, "consequence": {"type": None}}
    yield {**PLAIN, "consequence": {"type": "monetary", "amount": 1, "extra": 1, "more": 2}}
    yield {**PLAIN, "consequence": [1]}
    yield {**PLAIN, "consequence": "monetary"}
    yield {**PLAIN, "context": []}
    yield {**PLAIN, "context": None}
    yield {**PLAIN, "context": "x"}
    yield {**PLAIN, "context": {}}
    yield {**PLAIN, "context": {"nested": {"a": [1, 2.5, None, True]}}}
    yield {**PLAIN, "unknown": 1}
    yield {**PLAIN, "surface_id": "  surf-payment-release\t"}
    yield {**PLAIN, "agent_id": "agent-\u2028", "confidence": 2, "request_id": "a/b"}
    odd = (
        "",
        " ",
        " x",
        "x ",
        "a/b",
        "a\\b",
        "tab\there",
        "nul\x00",
        "x" * 256 + "\x00",
        "é",
        "\u00a0x",
        "\u2028",
        "a\u2028b",
        "\ud800x",
        "x" * 255,
        "x" * 256,
        7,
        -2.5,
        1e300,
        True,
        None,
        [],
        {"a": 1},
    )
    for field in ("surface_id", "agent_id", "process_id", "request_id", "request_source"):
        for value in odd:
            yield {**PLAIN, field: value}
    yield {**PLAIN, "request_id": "req-1", "request_source": "svc", "process_id": "proc-payments"}


def test_the_parser_takes_what_the_documented_serializer_takes_with_its_messages():
    accepted = 0
    for data in [*variants(), None, [], [PLAIN], "x", 5, 0, True, False, ""]:
        expected = serializer_answer(data)
        assert parser_answer(data) == expected, data
        accepted += isinstance(expected, dict)
    assert accepted >= 30


def test_strict_json_hands_odd_json_to_django():
    for body in (b"", b"{", b'{"confidence": NaN}', b'{"confidence": 1e999}', b"\xff\xfe", b"{} {}", b"\xef\xbb\xbf{}"):
        with pytest.raises(HandOver):
            strict_json(body)
    assert strict_json(b"[]") == ([], "[]")
    duplicate = b'{"surface_id": "a", "surface_id": "surf-payment-release", "agent_id": "x", "confidence": 0.5}'
    assert parse_evaluation(strict_json(duplicate)[0]).surface_id == "surf-payment-release"


def test_the_hot_path_renders_what_drf_renders():
    from rest_framework.renderers import JSONRenderer

    for response in ({"a": 'é\u2028\u2029"/<'}, {"n": 1.5, "b": False, "x": None, "l": [1, {"k": "v"}]}):
        assert render(response) == JSONRenderer().render(response)


def test_the_hot_path_imports_no_app_of_ours():
    """governance's hot path takes everything endpoint-specific as declarations."""
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent / "governance"
    for module in ("hotpath.py", "hot_steps.py", "token_cache.py", "group_commit.py"):
        tree = ast.parse((root / module).read_text())
        imported = [alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names]
        imported += [node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module]
        apps = {name.split(".")[0] for name in imported} & {"envelopes", "controlplane", "evidence", "entitlements"}
        assert not apps, (module, apps)


def test_canonical_json_fast_path_writes_exactly_rfc8785():
    rng = random.Random(4)
    floats = [0.0, -0.0, 1.0, 0.5, 0.1, 1e-4, 9.99e-5, 1e15, 1e16, 123456.789, 2.0**53, 2.0**53 + 2, 1e21, 5e-324]
    floats += [rng.uniform(-1e6, 1e6) for _ in range(300)] + [10 ** rng.uniform(-8, 22) for _ in range(300)]
    ints = [0, -1, 2**53 - 1, -(2**53 - 1)]
    strings = ["", "a", "é", "\u2028", "\x00\x1f", '"\\', "😀", "\ud7ff"]
    for value in floats + ints + strings + [None, True, False]:
        document = {"v": value, "list": [value, {"k": value}], "z": 1}
        assert canonical_json(document) == rfc8785.dumps(document), value
    keys = {"b": 1, "a": 2, "é": 3, "\U0001f600": 4, "\uffff": 5, "A": 6}
    assert canonical_json(keys) == rfc8785.dumps(keys)
    with pytest.raises(Exception):  # noqa: B017 (rfc8785's own error for NaN)
        canonical_json({"v": math.nan})


def test_event_hash_is_sha256_of_the_rfc8785_document():
    import hashlib
    from datetime import UTC, datetime, timedelta, timezone

    from evidence.canonical import event_hash

    rng = random.Random(7)
    texts = ["", "a", "é", "\u2028", "\x00\x1f", '"\\/', "😀", "x" * 300, "ENVELOPE_CREATED"]
    payloads = [{}, None, [], {"a": 1.5, "b": [1, 2.0, None], "é": "😀"}, {"n": str(2**60)}, {"z": {"y": {"x": 0.1}}}]
    moments = [datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=UTC), datetime(2026, 1, 2, tzinfo=timezone(timedelta(hours=5)))]
    for _ in range(300):
        fields = {
            "chain_id": rng.choice(texts),
            "sequence_no": rng.randint(1, 2**40),
            "event_type": rng.choice(texts),
            "performer_type": rng.choice(texts),
            "performer_id": rng.choice(texts),
            "payload": rng.choice(payloads),
            "prev_hash": rng.choice(texts),
        }
        moment = rng.choice(moments)
        document = {**fields, "occurred_at": moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")}
        expected = hashlib.sha256(rfc8785.dumps(document)).hexdigest()
        assert event_hash(**fields, occurred_at=moment) == expected, fields


def test_event_ids_are_time_ordered_version_7_uuids():
    import uuid

    from evidence.ids import uuid7_strs

    first, second = uuid7_strs(50), uuid7_strs(50)
    parsed = [uuid.UUID(text) for text in first + second]
    assert all(u.version == 7 and u.variant == uuid.RFC_4122 for u in parsed)
    assert len(set(parsed)) == 100
    assert max(first)[:13] <= min(second)[:13]  # the millisecond leads


def test_json_native_copies_plain_json_and_converts_the_rest():
    from decimal import Decimal

    from evidence.services.chain import json_native

    plain = {"a": [1, 2.5, None, True, "x"], "b": {"c": {}}}
    copied = json_native(plain)
    assert copied == plain and copied is not plain and copied["a"] is not plain["a"]
    converted = json_native({"d": Decimal("1.10"), "t": (1, 2), "big": 2**60})
    assert converted == {"d": "1.10", "t": [1, 2], "big": str(2**60)}
    with pytest.raises(ValueError):
        json_native({"x": math.inf})


def test_a_choices_member_is_stored_and_hashed_as_its_plain_text():
    import json

    from django.utils import timezone

    from envelopes.choices import EnvelopeState
    from evidence.canonical import event_hash
    from evidence.services.chain import json_native

    stored = json_native({"state": EnvelopeState.CLOSED, "list": [EnvelopeState.AWAITING_REVIEW]})
    assert stored == {"state": "closed", "list": ["awaiting_review"]}
    assert type(stored["state"]) is str and type(stored["list"][0]) is str
    read_back = json.loads(json.dumps(stored))  # what the JSON column gives back
    fields = {
        "chain_id": "c",
        "sequence_no": 1,
        "event_type": "ENVELOPE_CLOSED",
        "performer_type": "system",
        "performer_id": "mandate",
        "occurred_at": timezone.now(),
        "prev_hash": "",
    }
    assert event_hash(payload=stored, **fields) == event_hash(payload=read_back, **fields)


def test_pure_policy_decisions_are_remembered_and_impure_ones_are_not():
    source = "package t\nimport rego.v1\nallow if input.n < 3\n"
    impure = "package u\nimport rego.v1\nallow if time.now_ns() > 0\n"
    policies.forget_decisions()
    assert policies.is_pure(source) and not policies.is_pure(impure)
    assert policies.evaluate("t", source, "allow", {"n": 1}).allow
    assert not policies.evaluate("t", source, "allow", {"n": 5}).allow
    assert len(policies._remembered) == 2
    assert policies.evaluate("t", source, "allow", {"n": 1}).allow
    assert len(policies._remembered) == 2
    assert policies.evaluate("u", impure, "allow", {}).allow
    assert len(policies._remembered) == 2


# --- Postgres: the one-statement write --------------------------------------------------


def request(**overrides) -> EvaluationRequest:
    fields = {**PLAIN, "consequence": {"type": "monetary", "amount": 500.0, "currency": "GBP"}, **overrides}
    return EvaluationRequest(**fields)


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_one_evaluation_is_one_round_trip_transaction_control_included(organization):
    declare_demo_authority(organization)
    evaluate(organization, request(), "{}", performer_id="t")  # warm the snapshot cache
    with CaptureQueriesContext(connection) as queries:
        response = evaluate(organization, request(), "{}", performer_id="t")
    assert response["outcome"] == "accept"
    assert [q["sql"].split("(")[0] for q in queries.captured_queries] == ["SELECT mandate_record_evaluations"]


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_database_ledger_links_are_the_python_ledger_hash(organization):
    declare_demo_authority(organization)
    for n in range(3):
        evaluate(organization, request(request_id=f"r{n}"), "{}", performer_id="t")
    events = list(AuditEvent.objects.order_by("ledger_seq"))
    prev = ""
    for event in events:
        assert event.ledger_prev_hash == prev
        assert event.ledger_hash == ledger_hash(
            ledger_seq=event.ledger_seq, event_hash=event.hash, ledger_prev_hash=prev
        )
        prev = event.ledger_hash
    assert LedgerHead.objects.get(pk=1).hash == prev
    assert verify_ledger().valid


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_stale_snapshot_is_refused_by_the_write_and_decided_again(organization):
    declare_demo_authority(organization)
    assert evaluate(organization, request(), "{}", performer_id="t")["outcome"] == "accept"
    # Behind the cache's back: the grant is suspended and the revision moves.
    Grant.objects.filter(organization=organization).update(status="suspended")
    bump_revision(organization)
    response = evaluate(organization, request(request_id="after"), "{}", performer_id="t")
    assert response["reason"] == "NO_ACTIVE_GRANT"
    envelope = Envelope.objects.get(request_id="after")
    assert AuditEvent.objects.filter(chain_id=str(envelope.pk)).count() == len(envelope.audit_event_ids)
    assert AuditEvent.objects.count() == 11 + len(envelope.audit_event_ids)  # nothing from the stale try
    assert verify_chain(str(envelope.pk)).valid and verify_ledger().valid


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_the_write_refuses_a_token_that_no_longer_stands(organization, make_person):
    from governance.services.tokens import issue_token

    declare_demo_authority(organization)
    token, _secret = issue_token(make_person(roles=[Role.PLATFORM_OPERATOR]), "t", [Role.PLATFORM_OPERATOR])
    checked = {"id": str(token.pk), "roles": token.roles}
    assert evaluate(organization, request(), "{}", performer_id="t", token=checked)["outcome"] == "accept"
    with pytest.raises(StaleToken):  # roles changed since the token was cached
        evaluate(organization, request(), "{}", performer_id="t", token={**checked, "roles": ["platform.admin"]})
    ApiToken.objects.filter(pk=token.pk).update(status=TokenStatus.REVOKED)
    with pytest.raises(StaleToken):
        evaluate(organization, request(request_id="x"), "{}", performer_id="t", token=checked)
    assert Envelope.objects.count() == 1


# --- Postgres: the ASGI route ----------------------------------------------------------


@contextlib.contextmanager
def serving(app):
    """A hot path with evaluation's declaration in front of ``app``, torn down cleanly."""
    tokens.clear()
    route = HotPath(app, [EVALUATE], threads=2)
    assert route.endpoints
    yield route
    both = threading.Barrier(2)  # each thread hands its connection back before the database goes

    def close():
        both.wait(timeout=10)
        connections.close_all()

    for future in [route.executor.submit(close) for _ in range(2)]:
        future.result()
    route.executor.shutdown()
    group.close()
    tokens.clear()


@pytest.fixture
def router():
    from governance.asgi import django_application

    with serving(django_application) as route:
        yield route


def post_all(app, calls, url="/v1/evaluate", base_url="http://testserver"):
    """POST each (headers, body) in order through ``app``; the responses."""

    async def scenario():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url=base_url) as client:
            return [await client.post(url, headers=h, content=b) for h, b in calls]

    return asyncio.run(scenario())


def same_headers(hot, drf):
    assert sorted(hot.headers.keys()) == sorted(drf.headers.keys())
    for name in hot.headers:
        if name != "content-length":
            assert hot.headers[name] == drf.headers[name], name


def bearer(secret, content_type="application/json"):
    return {"Authorization": f"Bearer {secret}", "Content-Type": content_type}


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_route_answers_plain_requests_itself_exactly_as_django_does(router, organization, make_token, django_requests):
    declare_demo_authority(organization)
    secret = make_token(Role.PLATFORM_OPERATOR)
    fast_body = json.dumps({**PLAIN, "request_id": "fast"}).encode()
    slow_body = json.dumps({**PLAIN, "request_id": "slow"}).encode()
    fast, slow = post_all(
        router, [(bearer(secret), fast_body), (bearer(secret, 'application/json; charset="utf-8"'), slow_body)]
    )
    assert django_requests == ["/v1/evaluate"]  # only the second went through Django
    assert fast.status_code == slow.status_code == 200
    assert fast.json().keys() == slow.json().keys()
    assert {k: v for k, v in fast.json().items() if k != "envelope_id"} == {
        k: v for k, v in slow.json().items() if k != "envelope_id"
    }
    same_headers(fast, slow)
    envelope = Envelope.objects.get(request_id="fast")
    assert envelope.submitted_raw == fast_body.decode()
    assert verify_chain(envelope.chain_id).valid and verify_ledger().valid


def without_envelope_id(response) -> bytes:
    """The body with its (fresh per request) envelope id blanked out."""
    return re.sub(rb'"envelope_id":"[0-9a-f-]{36}"', b'"envelope_id":""', response.content)


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_hot_path_and_drf_view_answer_the_corpus_alike(router, organization, make_token, django_requests):
    from governance.asgi import django_application

    declare_demo_authority(organization)
    secret = make_token(Role.PLATFORM_OPERATOR)
    bodies = [json.dumps(data).encode() for data in variants()]

    async def scenario():
        hot_path = httpx.AsyncClient(transport=httpx.ASGITransport(app=router), base_url="http://testserver")
        drf_view = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=django_application), base_url="http://testserver"
        )
        answers = []
        async with hot_path, drf_view:
            for body in bodies:
                before = len(django_requests)
                hot = await hot_path.post("/v1/evaluate", headers=bearer(secret), content=body)
                answered_itself = len(django_requests) == before
                drf = await drf_view.post("/v1/evaluate", headers=bearer(secret), content=body)
                answers.append((body, hot, drf, answered_itself))
        return answers

    answered_itself = 0
    for body, hot, drf, itself in asyncio.run(scenario()):
        assert (hot.status_code, without_envelope_id(hot)) == (drf.status_code, without_envelope_id(drf)), body
        same_headers(hot, drf)
        if itself:
            answered_itself += 1
            assert hot.status_code == 200, body
    assert answered_itself >= 30  # the plain shapes do take the hot path, odd characters included
    assert verify_ledger().valid


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_route_leaves_to_django_what_django_answers_differently(router, organization, make_token, django_requests):
    declare_demo_authority(organization)
    secret = make_token(Role.PLATFORM_OPERATOR)
    body = json.dumps(PLAIN).encode()
    calls = [
        ({**bearer(secret), "Accept": "application/json; indent=4"}, body),  # DRF indents
        ({**bearer(secret), "Accept": "text/html"}, body),  # DRF cannot answer that: 406
        ({**bearer(secret), "Host": "evil.example"}, body),  # not in ALLOWED_HOSTS: 400
        ([*bearer(secret).items(), ("Authorization", "Bearer mdt_other_secret")], body),  # joined by Django: 401
    ]
    responses = post_all(router, calls)
    (on_query,) = post_all(router, [(bearer(secret), body)], url="/v1/evaluate?format=json")
    assert [r.status_code for r in responses] == [200, 406, 400, 401]
    assert responses[0].content.startswith(b'{\n    "outcome": "accept"')
    assert on_query.status_code == 200
    assert len(django_requests) == 5
    (plain,) = post_all(router, [({**bearer(secret), "Accept": "application/json, */*"}, body)])
    assert plain.status_code == 200 and len(django_requests) == 5


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_route_sends_strict_transport_security_over_https_as_django_does(
    organization, make_token, django_requests, settings
):
    from django.core.handlers.asgi import ASGIHandler

    declare_demo_authority(organization)
    secret = make_token(Role.PLATFORM_OPERATOR)
    settings.SECURE_HSTS_SECONDS = 3600
    settings.SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    with serving(ASGIHandler()) as route:  # Django's middleware built with these settings
        calls = [
            (bearer(secret), json.dumps({**PLAIN, "request_id": "hot"}).encode()),
            (bearer(secret, 'application/json; charset="utf-8"'), json.dumps({**PLAIN, "request_id": "drf"}).encode()),
        ]
        hot, drf = post_all(route, calls, base_url="https://testserver")
        (plain_http,) = post_all(route, calls[:1])
    assert len(django_requests) == 1
    assert hot.status_code == drf.status_code == plain_http.status_code == 200
    assert hot.headers["strict-transport-security"] == "max-age=3600; includeSubDomains"
    same_headers(hot, drf)
    assert "strict-transport-security" not in plain_http.headers


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_route_hands_errors_to_django_with_the_body_intact(router, organization, make_token, django_requests):
    declare_demo_authority(organization)
    operator, viewer = make_token(Role.PLATFORM_OPERATOR), make_token(Role.PLATFORM_VIEWER)
    same = json.dumps({**PLAIN, "request_id": "r1"}).encode()
    changed = json.dumps({**PLAIN, "request_id": "r1", "confidence": 0.9}).encode()
    responses = post_all(
        router,
        [
            (bearer(operator), json.dumps({**PLAIN, "confidence": 2}).encode()),
            (bearer(operator), b'{"surface_id": '),
            (bearer("mdt_nope_nope"), same),
            (bearer(viewer), same),
            (bearer(operator), json.dumps({**PLAIN, "process_id": "nope"}).encode()),
            (bearer(operator), same),
            (bearer(operator), same),
            (bearer(operator), changed),
        ],
    )
    assert [r.status_code for r in responses] == [400, 400, 401, 403, 400, 200, 200, 409]
    assert "confidence" in responses[0].json()["error"] or "confidence" in json.dumps(responses[0].json())
    assert responses[3].json()["required_permission"] == "evaluate"
    assert responses[5].content == responses[6].content  # the replay, byte for byte
    assert len(django_requests) == 6  # the replay of r1 was answered by the route
    assert Envelope.objects.count() == 1


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_route_notices_a_revoked_token_at_once(router, organization, make_token):
    declare_demo_authority(organization)
    secret = make_token(Role.PLATFORM_OPERATOR)
    first = post_all(router, [(bearer(secret), json.dumps(PLAIN).encode())])[0]
    assert first.status_code == 200  # the token is now cached by the route
    ApiToken.objects.update(status=TokenStatus.REVOKED)
    second = post_all(router, [(bearer(secret), json.dumps(PLAIN).encode())])[0]
    assert second.status_code == 401
    assert Envelope.objects.count() == 1


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_parallel_evaluations_through_the_route_keep_one_ledger(router, organization, make_token):
    declare_demo_authority(organization)
    secret = make_token(Role.PLATFORM_OPERATOR)
    bodies = [json.dumps({**PLAIN, "request_id": f"p{n}"}).encode() for n in range(24)]
    bodies += [json.dumps({**PLAIN, "request_id": "dup"}).encode()] * 8

    async def scenario():
        transport = httpx.ASGITransport(app=router)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            posts = (client.post("/v1/evaluate", headers=bearer(secret), content=b) for b in bodies)
            return await asyncio.gather(*posts)

    batches, recorded = group.batches, group.recorded
    responses = asyncio.run(scenario())
    assert [r.status_code for r in responses] == [200] * len(bodies)
    assert group.recorded - recorded == len(bodies)  # every evaluation went through the group commit...
    assert group.batches - batches < len(bodies)  # ...and some shared a statement
    assert len({r.json()["envelope_id"] for r in responses[24:]}) == 1
    assert Envelope.objects.count() == 25
    verdict = verify_ledger()
    assert verdict.valid and verdict.events_checked == 25 * 11


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_parallel_threads_recording_at_once_never_fork_the_ledger(organization):
    declare_demo_authority(organization)
    barrier = threading.Barrier(6)
    errors = []

    def run(n):
        try:
            barrier.wait()
            for k in range(5):
                evaluate(organization, request(request_id=f"t{n}-{k}"), "{}", performer_id="t")
        except Exception as exc:  # noqa: BLE001 (reported below)
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=run, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert Envelope.objects.count() == 30
    assert verify_ledger().valid
    assert sorted(AuditEvent.objects.values_list("ledger_seq", flat=True)) == list(range(1, 30 * 11 + 1))
    assert len(set(Envelope.objects.values_list("id", flat=True))) == 30


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_group_commit_gives_each_evaluation_its_own_status_and_isolates_a_failure(organization):
    from django.utils import timezone

    from envelopes.evaluation.engine import plan_evaluation, request_hash
    from envelopes.evaluation.snapshot import authority_snapshot
    from governance.group_commit import GroupCommit, _Pending

    declare_demo_authority(organization)
    snapshot = authority_snapshot(organization.pk)

    def planned(request_id, **overrides):
        evaluation = request(request_id=request_id, **overrides)
        digest = request_hash(evaluation)
        return plan_evaluation(organization.pk, evaluation, "{}", digest, "t", snapshot, timezone.now())

    first = planned("g1")
    again = planned("g1")  # the same request: a duplicate of the first, in the same statement
    changed = planned("g1", confidence=0.5)  # same id, other payload
    broken = planned("g2")
    broken.events[0]["hash"] = "not a hash"  # the database refuses the whole statement
    fine = planned("g3")
    stale = [_Pending((planned("g4"), snapshot.revision + 1, None))]
    items = [_Pending((p, snapshot.revision, None)) for p in (first, again, changed, broken, fine)] + stale
    writer = GroupCommit(record_many)
    writer._write(items)  # fails as a whole, then each is written alone
    statuses = [p.result["status"] if p.result else type(p.error).__name__ for p in items]
    assert statuses == ["recorded", "duplicate", "duplicate", "DataError", "recorded", "stale"]
    assert items[1].result["submitted_hash"] == first.envelope["submitted_hash"]
    assert items[2].result["submitted_hash"] != changed.envelope["submitted_hash"]
    assert set(Envelope.objects.values_list("request_id", flat=True)) == {"g1", "g3"}
    assert verify_ledger().valid

    together = [_Pending((planned(f"h{n}"), snapshot.revision, None)) for n in range(5)]
    batches = writer.batches
    writer._write(together)
    assert [p.result["status"] for p in together] == ["recorded"] * 5
    assert writer.batches == batches + 1  # the five shared one statement
    assert verify_ledger().valid and verify_ledger().events_checked == 7 * 11


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_route_without_group_commit_records_each_evaluation_alone(router, organization, make_token, monkeypatch):
    declare_demo_authority(organization)
    monkeypatch.setattr(group, "max_batch", 1)
    secret = make_token(Role.PLATFORM_OPERATOR)
    batches = group.batches
    bodies = [json.dumps({**PLAIN, "request_id": f"alone-{n}"}).encode() for n in range(6)]
    responses = post_all(router, [(bearer(secret), body) for body in bodies])
    assert [r.status_code for r in responses] == [200] * 6
    assert group.batches == batches  # the writer was not used
    assert Envelope.objects.count() == 6 and verify_ledger().valid


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_synchronous_answer_records_alone_and_hands_over_what_it_cannot_answer(organization, make_token):
    declare_demo_authority(organization)
    tokens.clear()
    secret = make_token(Role.PLATFORM_OPERATOR)
    body = json.dumps({**PLAIN, "request_id": "sync-1"}).encode()
    first = answer(secret, body)
    assert json.loads(first)["outcome"] == "accept"
    assert answer(secret, body) == first  # the replay, byte for byte
    assert answer(secret, json.dumps({**PLAIN, "request_id": "sync-1", "confidence": 0.5}).encode()) is None  # 409
    assert answer(secret, b"{") is None
    assert answer("mdt_unknown_secret", body) is None
    assert Envelope.objects.count() == 1
    tokens.clear()
