"""``GET /api/requests/{id}/wait``: the agent's long-poll, through the DRF view (test client)
and through the ASGI route that answers it under the server (``governance.asgi``)."""

import asyncio
import json
import os
import subprocess
import sys
import threading
import time
import uuid

import httpx
import pytest
from django.db import connection
from rest_framework.test import APIClient

from envelopes.requests import bus, longpoll, longpoll_route
from envelopes.requests.channels import create_invite, register_channel
from envelopes.requests.decisions import act
from envelopes.requests.submissions import submit_request
from governance.choices import Role

TIMEOUT_BODY = {"error": {"code": "timeout", "message": "Decision pending"}}


class Agent:
    def __init__(self, owner, **body):
        _, token = create_invite(owner)
        self.channel, self.api_key, _ = register_channel(token, **body)
        self.client = APIClient()
        self.client.credentials(HTTP_AUTHORIZATION=f"Bearer {self.api_key}")
        self.headers = {"Authorization": f"Bearer {self.api_key}"}

    def submit(self, **fields) -> str:
        data = {"type": "approval_request", "title": "Approve domain transfer", **fields}
        return str(submit_request(self.channel, data, json.dumps(data)).pk)


@pytest.fixture
def agent(make_person):
    return Agent(make_person(username="owner"))


@pytest.fixture
def approver(make_person):
    return make_person(roles=(Role.GOVERNANCE_APPROVER,), username="approver")


@pytest.fixture
def quiet_bus(monkeypatch):
    """Decisions in this test notify nobody: only a re-check (or a message from elsewhere) can
    tell the waiter."""
    monkeypatch.setattr(bus, "publish", lambda request_id: None)


def asgi_client():
    from governance.asgi import application

    return httpx.AsyncClient(transport=httpx.ASGITransport(app=application), base_url="http://testserver")


async def until(condition, timeout=5.0):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.005)


def decide_in_thread(organization_id, request_id, person, action="approve", **fields):
    """Decide in another thread (as another request would), committed, connection released."""

    def decide():
        try:
            act(organization_id, request_id, person, action, **fields)
            return time.perf_counter()
        finally:
            connection.close()

    return asyncio.to_thread(decide)


# --- the DRF view (WSGI, test client) ---------------------------------------------------------


@pytest.mark.django_db
def test_wait_returns_the_decision_when_decided(agent, approver, organization):
    request_id = agent.submit()
    act(organization.pk, request_id, approver, "approve", comment="fine")
    response = agent.client.get(f"/api/requests/{request_id}/wait?timeout=60")
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"request_id", "status", "approved_by", "decision_time", "comments", "envelope_snapshot"}
    assert (body["request_id"], body["status"], body["approved_by"], body["comments"]) == (
        request_id,
        "approved",
        str(approver.pk),
        "fine",
    )
    assert body["decision_time"].endswith("Z")
    assert body["envelope_snapshot"] == {"type": "approval_request", "title": "Approve domain transfer"}


@pytest.mark.django_db
def test_wait_returns_the_choice_of_a_choice_request(agent, approver, organization):
    request_id = agent.submit(type="choice", payload={"options": [{"id": "a", "label": "Alpha"}, "b"]})
    act(organization.pk, request_id, approver, "choose", choice="Alpha")
    body = agent.client.get(f"/api/requests/{request_id}/wait").json()
    assert (body["status"], body["choice"]) == ("approved", "a")


@pytest.mark.django_db
def test_wait_returns_the_answer_of_an_input_request(agent, approver, organization):
    request_id = agent.submit(type="input_request")
    act(organization.pk, request_id, approver, "answer", input_text="use eu-west-1")
    body = agent.client.get(f"/api/requests/{request_id}/wait").json()
    assert (body["status"], body["input"]) == ("approved", "use eu-west-1")


@pytest.mark.django_db
def test_wait_returns_acknowledged_for_a_log_only_request(agent):
    request_id = agent.submit(route="log_only")
    body = agent.client.get(f"/api/requests/{request_id}/wait?timeout=0").json()
    assert (body["status"], body["approved_by"]) == ("acknowledged", "system")


@pytest.mark.django_db
def test_wait_returns_the_tweak_event_while_a_change_request_is_open(agent, approver, organization):
    request_id = agent.submit(tweak_allowed=True)
    act(organization.pk, request_id, approver, "request_changes", comment="Reduce the cap to $500")
    response = agent.client.get(f"/api/requests/{request_id}/wait?timeout=60")
    assert response.status_code == 200
    event = response.json()
    assert set(event) == {"event", "request_id", "tweak_id", "request_text", "requested_by", "envelope_snapshot"}
    assert (event["event"], event["request_id"], event["requested_by"]) == (
        "tweak_requested",
        request_id,
        str(approver.pk),
    )
    assert event["request_text"] == "Reduce the cap to $500"


@pytest.mark.django_db
def test_a_withdrawn_tweak_no_longer_answers_the_wait(agent, approver, organization):
    request_id = agent.submit(tweak_allowed=True)
    act(organization.pk, request_id, approver, "request_changes", comment="Smaller, please")
    act(organization.pk, request_id, approver, "withdraw_tweak")
    response = agent.client.get(f"/api/requests/{request_id}/wait?timeout=0")
    assert response.status_code == 408


@pytest.mark.django_db
def test_wait_on_a_pending_request_is_408_with_aios_body(agent):
    request_id = agent.submit()
    response = agent.client.get(f"/api/requests/{request_id}/wait?timeout=0.05")
    assert response.status_code == 408
    assert response.json() == TIMEOUT_BODY


@pytest.mark.django_db
def test_wait_without_timeout_waits_the_requests_own_long_poll_timeout(agent):
    request_id = agent.submit(long_poll_timeout_seconds=1)
    started = time.monotonic()
    response = agent.client.get(f"/api/requests/{request_id}/wait")
    assert response.status_code == 408
    assert 0.9 <= time.monotonic() - started < 5


@pytest.mark.django_db
@pytest.mark.parametrize("timeout", ["abc", "-1", "nan", "inf", "1e999", "0x10"])
def test_a_timeout_that_is_not_a_number_of_seconds_is_400(agent, timeout):
    request_id = agent.submit()
    response = agent.client.get(f"/api/requests/{request_id}/wait", {"timeout": timeout})
    assert response.status_code == 400
    assert response.json() == {"error": "timeout: must be a number of seconds from 0 to 300"}


@pytest.mark.parametrize(
    "raw, seconds", [(None, None), ("", None), ("0", 0.0), ("60", 60.0), ("2.5", 2.5), ("300", 300.0), ("301", 300.0)]
)
def test_timeout_is_capped_at_300_seconds(raw, seconds):
    assert longpoll.parse_wait_timeout(raw) == seconds
    assert longpoll.parse_wait_timeout("86400") == 300


# --- the ASGI route (what the server runs) ----------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_asgi_route_answers_a_decided_request_without_entering_django(agent, approver, organization, django_requests):
    request_id = agent.submit()
    act(organization.pk, request_id, approver, "reject", comment="not today")

    async def scenario():
        async with asgi_client() as client:
            waited = await client.get(f"/api/requests/{request_id}/wait", headers=agent.headers)
            health = await client.get("/healthz")
        return waited, health

    waited, health = asyncio.run(scenario())
    assert waited.status_code == 200
    assert waited.headers["content-type"] == "application/json"
    assert waited.json()["status"] == "rejected" and waited.json()["comments"] == "not today"
    assert health.status_code == 200
    assert django_requests == ["/healthz"]


@pytest.mark.django_db(transaction=True)
def test_asgi_route_times_out_with_the_exact_aios_body(agent):
    request_id = agent.submit()

    async def scenario():
        async with asgi_client() as client:
            return await client.get(f"/api/requests/{request_id}/wait?timeout=0.1", headers=agent.headers)

    response = asyncio.run(scenario())
    assert response.status_code == 408
    assert response.content == b'{"error":{"code":"timeout","message":"Decision pending"}}'
    assert bus.waiting_count() == 0


@pytest.mark.django_db(transaction=True)
def test_asgi_route_returns_the_tweak_event(agent, approver, organization):
    request_id = agent.submit(tweak_allowed=True)

    async def scenario():
        async with asgi_client() as client:
            waiting = asyncio.create_task(
                client.get(f"/api/requests/{request_id}/wait?timeout=10", headers=agent.headers)
            )
            await until(lambda: bus.waiting_count() == 1)
            await decide_in_thread(organization.pk, request_id, approver, "request_changes", comment="Add a rollback")
            return await waiting

    response = asyncio.run(scenario())
    assert response.status_code == 200
    assert response.json()["event"] == "tweak_requested"
    assert response.json()["request_text"] == "Add a rollback"


@pytest.mark.django_db(transaction=True)
def test_asgi_route_refuses_missing_bad_and_foreign_credentials(agent, make_person):
    other = Agent(make_person(username="other-owner"))
    request_id = agent.submit()

    async def scenario():
        async with asgi_client() as client:
            url = f"/api/requests/{request_id}/wait?timeout=0"
            return [
                await client.get(url),
                await client.get(url, headers={"Authorization": "Bearer mdt_a_person_token"}),
                await client.get(url, headers={"Authorization": "Bearer mdc_000000000000_wrong"}),
                await client.get(url, headers=other.headers),
                await client.get("/api/requests/not-a-uuid/wait", headers=agent.headers),
                await client.get(f"/api/requests/{request_id}/wait?timeout=soon", headers=agent.headers),
            ]

    missing, person_token, wrong, foreign, malformed, bad_timeout = asyncio.run(scenario())
    assert (missing.status_code, missing.json()) == (401, {"error": "unauthenticated"})
    assert missing.headers["www-authenticate"] == 'Bearer realm="mandate"'
    assert person_token.status_code == 401
    assert (wrong.status_code, wrong.json()) == (401, {"error": "invalid or revoked channel key"})
    assert (foreign.status_code, foreign.json()) == (404, {"error": "request not found"})
    assert (malformed.status_code, malformed.json()) == (404, {"error": "request not found"})
    assert bad_timeout.status_code == 400


@pytest.mark.django_db(transaction=True)
def test_a_decision_wakes_its_waiter_through_the_bus_within_100_ms(agent, approver, organization, settings):
    settings.MANDATE_LONGPOLL_RECHECK_SECONDS = 60  # only the bus can wake it in time
    request_ids = [agent.submit() for _ in range(5)]

    async def one(client, request_id):
        waiting = asyncio.create_task(client.get(f"/api/requests/{request_id}/wait?timeout=30", headers=agent.headers))
        await until(lambda: bus.waiting_count() == 1)
        await asyncio.sleep(0.05)  # the waiter is parked
        decided_at = await decide_in_thread(organization.pk, request_id, approver)
        response = await waiting
        assert response.status_code == 200 and response.json()["status"] == "approved"
        return time.perf_counter() - decided_at

    async def scenario():
        async with asgi_client() as client:
            return [await one(client, request_id) for request_id in request_ids]

    latencies = sorted(asyncio.run(scenario()))
    median = latencies[len(latencies) // 2]
    assert median < 0.1, f"woke {median * 1000:.0f} ms (median) after the decision"


@pytest.mark.django_db(transaction=True)
def test_revoking_the_channel_ends_its_agents_wait_at_once(agent, settings):
    from envelopes.requests.channels import revoke_channel

    settings.MANDATE_LONGPOLL_RECHECK_SECONDS = 120  # the re-check cannot be what ends it
    request_id = agent.submit()

    def revoke():
        try:
            revoke_channel(agent.channel)
            return time.perf_counter()
        finally:
            connection.close()

    async def scenario():
        async with asgi_client() as client:
            waiting = asyncio.create_task(
                client.get(f"/api/requests/{request_id}/wait?timeout=60", headers=agent.headers)
            )
            await until(lambda: bus.waiting_count() == 1)
            await asyncio.sleep(0.05)
            revoked_at = await asyncio.to_thread(revoke)
            response = await asyncio.wait_for(waiting, 5)
            return response, time.perf_counter() - revoked_at

    response, after = asyncio.run(scenario())
    assert response.status_code == 401
    assert response.json() == {"error": "invalid or revoked channel key"}
    assert after < 1.0


@pytest.mark.django_db(transaction=True)
def test_bus_publish_wakes_the_waiter_which_reads_the_decision(agent, approver, organization, settings, monkeypatch):
    settings.MANDATE_LONGPOLL_RECHECK_SECONDS = 60
    request_id = agent.submit()
    publish = bus.publish
    monkeypatch.setattr(bus, "publish", lambda request_id: None)

    async def scenario():
        async with asgi_client() as client:
            waiting = asyncio.create_task(
                client.get(f"/api/requests/{request_id}/wait?timeout=30", headers=agent.headers)
            )
            await until(lambda: bus.waiting_count() == 1)
            await decide_in_thread(organization.pk, request_id, approver)  # silent: the waiter sleeps on
            await asyncio.sleep(0.2)
            assert not waiting.done()
            published_at = time.perf_counter()
            publish(request_id)
            response = await waiting
            return response, time.perf_counter() - published_at

    response, latency = asyncio.run(scenario())
    assert response.status_code == 200 and response.json()["status"] == "approved"
    assert latency < 0.5, f"woke {latency * 1000:.0f} ms after publish"  # the re-check is 60 s away


@pytest.mark.django_db(transaction=True)
def test_without_notification_the_periodic_recheck_still_sees_the_decision(
    agent, approver, organization, settings, quiet_bus
):
    settings.MANDATE_LONGPOLL_RECHECK_SECONDS = 0.2
    request_id = agent.submit()

    async def scenario():
        async with asgi_client() as client:
            waiting = asyncio.create_task(
                client.get(f"/api/requests/{request_id}/wait?timeout=30", headers=agent.headers)
            )
            await until(lambda: bus.waiting_count() == 1)
            decided_at = await decide_in_thread(organization.pk, request_id, approver)
            response = await waiting
            return response, time.perf_counter() - decided_at

    response, latency = asyncio.run(scenario())
    assert response.status_code == 200 and response.json()["status"] == "approved"
    assert latency < 1.0


@pytest.mark.django_db(transaction=True)
def test_the_periodic_recheck_also_sees_a_change_request(agent, approver, organization, settings, quiet_bus):
    settings.MANDATE_LONGPOLL_RECHECK_SECONDS = 0.2
    request_id = agent.submit(tweak_allowed=True)

    async def scenario():
        async with asgi_client() as client:
            waiting = asyncio.create_task(
                client.get(f"/api/requests/{request_id}/wait?timeout=30", headers=agent.headers)
            )
            await until(lambda: bus.waiting_count() == 1)
            await decide_in_thread(organization.pk, request_id, approver, "request_changes", comment="Smaller")
            return await asyncio.wait_for(waiting, 5)

    response = asyncio.run(scenario())
    assert response.json()["event"] == "tweak_requested"


@pytest.mark.django_db(transaction=True)
def test_waiters_hold_no_thread_and_no_database_connection(agent, settings):
    settings.MANDATE_LONGPOLL_RECHECK_SECONDS = 60
    request_ids = [agent.submit() for _ in range(20)]
    waiters_per_request = 10

    def lookup_threads_hold_a_connection() -> list[bool]:
        barrier = threading.Barrier(longpoll.LOOKUP_THREADS, timeout=5)

        def probe():
            barrier.wait()  # one probe per lookup thread
            return connection.connection is not None

        futures = [longpoll._executor.submit(probe) for _ in range(longpoll.LOOKUP_THREADS)]
        return [future.result() for future in futures]

    async def scenario():
        threads_before = threading.active_count()
        async with asgi_client() as client:
            url = "/api/requests/{}/wait?timeout=30"
            tasks = [
                asyncio.create_task(client.get(url.format(request_id), headers=agent.headers))
                for request_id in request_ids
                for _ in range(waiters_per_request)
            ]
            await until(lambda: bus.waiting_count() == len(tasks), timeout=20)
            await asyncio.sleep(0.1)
            threads_waiting = threading.active_count()
            held = await asyncio.to_thread(lookup_threads_hold_a_connection)
            for request_id in request_ids:
                bus.publish(request_id)  # wakes them: each re-checks, still pending, waits on
            await asyncio.sleep(0.3)
            still_waiting = bus.waiting_count()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        return threads_before, threads_waiting, held, still_waiting, len(tasks)

    threads_before, threads_waiting, held, still_waiting, waiters = asyncio.run(scenario())
    assert threads_waiting - threads_before <= longpoll.LOOKUP_THREADS + 2
    assert held == [False] * longpoll.LOOKUP_THREADS
    assert still_waiting == waiters


@pytest.mark.django_db(transaction=True)
def test_waiters_woken_together_share_their_lookups(agent, approver, organization, settings, monkeypatch):
    settings.MANDATE_LONGPOLL_RECHECK_SECONDS = 60
    request_ids = [agent.submit() for _ in range(40)]
    batches = []
    lookup = longpoll.lookup_answers

    def counting(lookups):
        batches.append(len(lookups))
        return lookup(lookups)

    monkeypatch.setattr(longpoll, "lookup_answers", counting)
    publish = bus.publish
    monkeypatch.setattr(bus, "publish", lambda request_id: None)

    def decide_all():
        try:
            for request_id in request_ids:
                act(organization.pk, request_id, approver, "approve")
        finally:
            connection.close()

    async def scenario():
        async with asgi_client() as client:
            tasks = [
                asyncio.create_task(client.get(f"/api/requests/{r}/wait?timeout=30", headers=agent.headers))
                for r in request_ids
            ]
            await until(lambda: sum(batches) == len(tasks))  # every waiter looked once and waits
            await asyncio.sleep(0.05)
            await asyncio.to_thread(decide_all)
            batches.clear()
            for request_id in request_ids:  # as a burst of notifications arrives
                publish(request_id)
            return await asyncio.gather(*tasks)

    responses = asyncio.run(scenario())
    assert [r.json()["status"] for r in responses] == ["approved"] * len(request_ids)
    assert batches == [len(request_ids)]


@pytest.mark.django_db(transaction=True)
def test_a_client_that_goes_away_stops_waiting(agent):
    request_id = agent.submit()
    sent = []

    async def scenario():
        gone = asyncio.Event()
        messages = [{"type": "http.request", "body": b"", "more_body": False}]

        async def receive():
            if messages:
                return messages.pop()
            await gone.wait()
            return {"type": "http.disconnect"}

        async def send(message):
            sent.append(message)

        scope = {
            "type": "http",
            "method": "GET",
            "path": f"/api/requests/{request_id}/wait",
            "query_string": b"timeout=30",
            "headers": [(b"authorization", agent.headers["Authorization"].encode())],
        }
        handling = asyncio.create_task(longpoll_route.wait_endpoint(scope, receive, send, request_id))
        await until(lambda: bus.waiting_count() == 1)
        gone.set()
        await asyncio.wait_for(handling, 2)

    asyncio.run(scenario())
    assert sent == []
    assert bus.waiting_count() == 0


# --- across processes (Redis) ---------------------------------------------------------------


@pytest.mark.redis
@pytest.mark.skipif(not os.environ.get("REDIS_URL"), reason="needs Redis: set REDIS_URL")
@pytest.mark.django_db(transaction=True)
def test_a_decision_published_by_another_process_wakes_the_waiter_through_redis(
    agent, approver, organization, settings, quiet_bus
):
    settings.MANDATE_LONGPOLL_RECHECK_SECONDS = 120  # the re-check cannot be what wakes it
    settings.REDIS_URL = os.environ["REDIS_URL"]
    request_id = agent.submit()
    publisher = (
        "import django; django.setup(); from envelopes.requests import bus; "
        f"bus.publish({request_id!r}); print('published')"
    )

    async def scenario():
        async with asgi_client() as client:
            waiting = asyncio.create_task(
                client.get(f"/api/requests/{request_id}/wait?timeout=60", headers=agent.headers)
            )
            await until(lambda: bus.waiting_count() == 1)
            assert await bus.ready(timeout=5)
            await decide_in_thread(organization.pk, request_id, approver)  # quiet here: no local wake
            await asyncio.sleep(0.2)
            assert not waiting.done()
            env = {**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings"}
            result = await asyncio.to_thread(
                subprocess.run, [sys.executable, "-c", publisher], env=env, capture_output=True, text=True, timeout=60
            )
            assert result.stdout.strip() == "published", result.stderr
            published_at = time.perf_counter()
            response = await asyncio.wait_for(waiting, 10)
            return response, time.perf_counter() - published_at

    response, latency = asyncio.run(scenario())
    assert response.status_code == 200 and response.json()["status"] == "approved"
    assert latency < 1.0


def test_publish_never_raises_nor_waits_when_redis_is_unreachable(settings, monkeypatch):
    settings.REDIS_URL = "redis://127.0.0.1:1/0"  # nothing listens on port 1
    monkeypatch.setattr(bus, "_skip_redis_until", 0.0)
    started = time.perf_counter()
    bus.publish("8a4e0000-0000-0000-0000-000000000000")
    assert time.perf_counter() - started < 0.05  # the decision never waits on Redis
    bus.flush(timeout=3)
    assert bus._skip_redis_until > time.monotonic()  # later publishes skip Redis for a while
    bus.publish("8a4e0000-0000-0000-0000-000000000001")  # and still do not raise


def test_the_subscriber_skips_its_own_messages_and_wakes_for_others(monkeypatch):
    woken = []
    monkeypatch.setattr(bus, "wake_local", woken.append)
    bus._Subscriber._deliver(f"{bus._origin()} a b".encode())
    bus._Subscriber._deliver(b"elsewhere c d")
    bus._Subscriber._deliver(None)
    assert woken == ["c", "d"]


@pytest.mark.django_db
def test_a_batch_of_lookups_costs_three_queries_whatever_its_size(
    agent, approver, organization, django_assert_num_queries
):
    decided = [agent.submit(type="choice", payload={"options": ["a", "b"]}) for _ in range(5)]
    for request_id in decided:
        act(organization.pk, request_id, approver, "choose", choice="b")
    tweaked = agent.submit(tweak_allowed=True)
    act(organization.pk, tweaked, approver, "request_changes", comment="Smaller")
    pending = agent.submit(tweak_allowed=True)
    lookups = [longpoll.Lookup(uuid.UUID(r), channel_id=agent.channel.pk) for r in [*decided, tweaked, pending]]
    with django_assert_num_queries(2):  # the requests, then their open change requests
        answers = longpoll.lookup_answers(lookups)
    assert [a.kind for a in answers] == [longpoll.READY] * 6 + [longpoll.PENDING]
    assert answers[0].body["choice"] == "b" and answers[5].body["event"] == "tweak_requested"
    with django_assert_num_queries(3):  # plus the channel key
        (answer,) = longpoll.lookup_answers([longpoll.Lookup(uuid.UUID(pending), api_key=agent.api_key)])
    assert answer.kind == longpoll.PENDING and answer.default_timeout == 60


@pytest.mark.django_db
def test_payloads_from_a_request_row_are_those_of_the_model(agent, approver, organization):
    from envelopes.models import ApprovalRequest, Tweak
    from envelopes.requests.decisions import decision_payload, tweak_payload

    chosen = agent.submit(type="choice", payload={"options": ["a", "b"]})
    act(organization.pk, chosen, approver, "choose", choice="a", comment="A")
    answered = agent.submit(type="input_request")
    act(organization.pk, answered, approver, "answer", input_text="eu-west-1")
    rejected = agent.submit()
    act(organization.pk, rejected, approver, "reject", comment="no")
    tweaked = agent.submit(tweak_allowed=True)
    act(organization.pk, tweaked, approver, "request_changes", comment="Smaller")
    rows = longpoll.RequestRow.fetch([uuid.UUID(r) for r in (chosen, answered, rejected, tweaked)])
    for request_id in (chosen, answered, rejected):
        model = ApprovalRequest.objects.get(pk=request_id)
        assert decision_payload(rows[model.pk]) == decision_payload(model)
    model = ApprovalRequest.objects.get(pk=tweaked)
    tweak = Tweak.objects.get(request=model)
    assert tweak_payload(rows[model.pk], tweak, "tweak_requested") == tweak_payload(model, tweak, "tweak_requested")


@pytest.mark.django_db(transaction=True)
def test_a_wait_with_a_host_django_refuses_is_refused_as_django_does(agent, settings, django_requests):
    settings.ALLOWED_HOSTS = ["mandate.example"]
    request_id = agent.submit()
    from governance.asgi import hot_path

    router = longpoll_route.LongPollRouter(hot_path)

    async def scenario():
        transport = httpx.ASGITransport(app=router)
        async with httpx.AsyncClient(transport=transport, base_url="http://evil.example") as client:
            refused = await client.get(f"/api/requests/{request_id}/wait?timeout=0", headers=agent.headers)
        async with httpx.AsyncClient(transport=transport, base_url="http://mandate.example") as client:
            allowed = await client.get(f"/api/requests/{request_id}/wait?timeout=0", headers=agent.headers)
        return refused, allowed

    refused, allowed = asyncio.run(scenario())
    assert refused.status_code == 400  # Django's DisallowedHost
    assert django_requests == [f"/api/requests/{request_id}/wait"]  # the allowed one never entered Django
    assert (allowed.status_code, allowed.json()) == (408, TIMEOUT_BODY)
