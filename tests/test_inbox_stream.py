"""The inbox's live stream (server-sent events) over real HTTP, answered in front of Django
by ``governance.asgi``: new and decided cards reach the people who may see them, and
nobody else; keepalives; the client leaving; sessions; no thread or connection per stream."""

import asyncio
import json
import threading
import time

import httpx
import pytest
from django.contrib.sessions.models import Session
from django.db import connection

from envelopes.evaluation.reviews import review_envelope
from envelopes.inbox import stream_route
from envelopes.requests import bus
from envelopes.requests.decisions import act
from governance.choices import Role
from governance.services.people import create_person, ensure_organization
from tests.asgi_server import running_server, session_cookie
from tests.factories import declare_demo_authority
from tests.test_inbox_requests import ask, open_channel
from tests.test_reviews import submit as evaluate

pytestmark = pytest.mark.django_db(transaction=True)

EVENTS = "/admin/envelopes/approvalrequest/live/events/"


@pytest.fixture
def asgi_server(transactional_db):
    with running_server() as server:
        yield server


@pytest.fixture(autouse=True)
def slow_keepalives(settings):
    """No keepalive (nor the re-check it brings) within a test unless it asks: what arrives
    came through the notification bus."""
    settings.MANDATE_INBOX_KEEPALIVE_SECONDS = 60


@pytest.fixture
def quick_keepalives(settings):
    settings.MANDATE_INBOX_KEEPALIVE_SECONDS = 0.3


def cookie_header(cookies: dict) -> dict:
    return {"Cookie": "; ".join(f"{name}={value}" for name, value in cookies.items())}


@pytest.fixture
def acme(db):
    organization = ensure_organization("acme", "Acme")
    return {
        "organization": organization,
        "owner": create_person(organization, "olivia", roles=[Role.GOVERNANCE_APPROVER]),
        "alice": create_person(organization, "alice", roles=[Role.GOVERNANCE_APPROVER]),
        "carol": create_person(organization, "carol", roles=[Role.GOVERNANCE_APPROVER]),
    }


@pytest.fixture
def globex(db):
    organization = ensure_organization("globex", "Globex")
    return {
        "organization": organization,
        "bob": create_person(organization, "bob", roles=[Role.PLATFORM_ADMIN]),
    }


class Events:
    """One open stream, read as a browser's EventSource reads it."""

    def __init__(self, client: httpx.AsyncClient, cookies: dict):
        self.client, self.cookies = client, cookies
        self.queue: asyncio.Queue = asyncio.Queue()
        self.status = None
        self.headers = None
        self.opened = asyncio.Event()
        self.task = None

    async def _read(self):
        async with self.client.stream("GET", EVENTS, headers=cookie_header(self.cookies)) as response:
            self.status, self.headers = response.status_code, response.headers
            self.opened.set()
            name, data = "message", []
            async for line in response.aiter_lines():
                if line == "":
                    if data:
                        await self.queue.put((name, json.loads("\n".join(data))))
                    name, data = "message", []
                elif line.startswith(":"):
                    await self.queue.put(("comment", line[1:].strip()))
                else:
                    field, _, value = line.partition(":")
                    value = value[1:] if value.startswith(" ") else value
                    if field == "event":
                        name = value
                    elif field == "data":
                        data.append(value)
                    elif field == "retry":
                        await self.queue.put(("retry", value))
            await self.queue.put(("closed", None))

    async def open(self) -> "Events":
        self.task = asyncio.create_task(self._read())
        await asyncio.wait_for(self.opened.wait(), 10)
        return self

    async def next(self, name: str = "inbox", timeout: float = 5.0):
        """The next event called ``name`` (others are skipped)."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            assert left > 0, f"no {name!r} event within {timeout} s"
            kind, data = await asyncio.wait_for(self.queue.get(), left)
            if kind == name:
                return data

    def received(self) -> list:
        """Everything received so far and not read, in order."""
        items = []
        while not self.queue.empty():
            items.append(self.queue.get_nowait())
        return items

    async def close(self):
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)


def in_thread(function, *args, **kwargs):
    """A service call as another request makes it: committed, its connection released."""

    def run():
        try:
            return function(*args, **kwargs)
        finally:
            connection.close()

    return asyncio.to_thread(run)


async def until(condition, timeout=5.0):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.01)


def test_a_new_card_and_its_decision_reach_the_connected_inbox_and_no_other_organization(
    asgi_server, acme, globex, django_requests
):
    channel = open_channel(acme["owner"])[0]
    alice_signed_in, bob_signed_in = session_cookie(acme["alice"]), session_cookie(globex["bob"])

    async def scenario():
        async with httpx.AsyncClient(base_url=asgi_server.url, timeout=10) as client:
            alice = await Events(client, alice_signed_in).open()
            bob = await Events(client, bob_signed_in).open()
            assert alice.status == bob.status == 200
            assert alice.headers["content-type"].startswith("text/event-stream")
            assert alice.headers["cache-control"] == "no-store"
            first = await alice.next()
            assert (first["waiting"], first["decidable"], first["arrived"]) == (0, 0, [])
            bob_first = await bob.next()
            assert bob_first["waiting"] == 0

            request = await in_thread(ask, channel, title="Transfer example.com", summary="Move the domain.")
            created = await alice.next()
            assert (created["waiting"], created["decidable"]) == (1, 1)
            assert created["version"] != first["version"]
            assert created["arrived"] == [
                {
                    "id": str(request.pk),
                    "kind": "Approval request",
                    "title": "Transfer example.com",
                    "summary": "Move the domain.",
                    "url": f"/admin/envelopes/approvalrequest/{request.pk}/change/",
                }
            ]

            await in_thread(act, acme["organization"].pk, request.pk, acme["carol"], "approve")
            decided = await alice.next()
            assert (decided["waiting"], decided["decidable"], decided["arrived"]) == (0, 0, [])
            assert decided["left"] == [str(request.pk)]

            await asyncio.sleep(0.5)
            seen_by_bob = bob.received()
            await alice.close()
            await bob.close()
            return seen_by_bob

    assert asyncio.run(scenario()) == []  # another organization's stream heard nothing
    assert EVENTS not in django_requests  # answered in front of Django


def test_keepalives_come_and_each_looks_again_so_a_missed_notification_is_late_not_lost(
    asgi_server,
    acme,
    quick_keepalives,
    monkeypatch,
):
    channel = open_channel(acme["owner"])[0]
    signed_in = session_cookie(acme["alice"])
    monkeypatch.setattr(bus, "publish", lambda key: None)  # notifications are lost

    async def scenario():
        async with httpx.AsyncClient(base_url=asgi_server.url, timeout=10) as client:
            alice = await Events(client, signed_in).open()
            await alice.next()
            assert await alice.next("comment") == "keepalive"
            request = await in_thread(ask, channel)
            created = await alice.next(timeout=3)
            await alice.close()
            return request, created

    request, created = asyncio.run(scenario())
    assert created["waiting"] == 1 and [card["id"] for card in created["arrived"]] == [str(request.pk)]


def test_an_escalation_reaches_reviewers_as_a_card_they_can_decide_and_approvers_as_one_they_cannot(asgi_server):
    organization = declare_demo_authority(ensure_organization("acme", "Acme"))
    reviewer = create_person(organization, "rita", roles=[Role.GOVERNANCE_REVIEWER])
    approver = create_person(organization, "alice", roles=[Role.GOVERNANCE_APPROVER])
    rita_signed_in, alice_signed_in = session_cookie(reviewer), session_cookie(approver)

    async def scenario():
        async with httpx.AsyncClient(base_url=asgi_server.url, timeout=10) as client:
            rita = await Events(client, rita_signed_in).open()
            alice = await Events(client, alice_signed_in).open()
            await rita.next()
            await alice.next()
            escalation = await in_thread(evaluate, organization, confidence=0.4)
            for_rita, for_alice = await rita.next(), await alice.next()
            await in_thread(review_envelope, organization, escalation.pk, "approve", reviewer, "fine")
            after = await rita.next()
            await rita.close()
            await alice.close()
            return escalation, for_rita, for_alice, after

    escalation, for_rita, for_alice, after = asyncio.run(scenario())
    assert for_rita["waiting"] == for_alice["waiting"] == 1
    assert [(card["id"], card["title"]) for card in for_rita["arrived"]] == [
        (str(escalation.pk), "Confidence below threshold")
    ]
    assert for_alice["arrived"] == [] and for_alice["decidable"] == 0  # she reads it; she cannot decide it
    assert (after["waiting"], after["left"]) == (0, [str(escalation.pk)])


def test_the_stream_ends_cleanly_when_the_client_leaves(asgi_server, acme, quick_keepalives):
    signed_in = session_cookie(acme["alice"])

    async def scenario():
        async with httpx.AsyncClient(base_url=asgi_server.url, timeout=10) as client:
            before = bus.waiting_count()
            events = await Events(client, signed_in).open()
            await events.next()
            await events.next("comment")
            assert bus.waiting_count() == before + 1  # subscribed to its organization's key
            await events.close()
            await until(lambda: bus.waiting_count() == before)

    asyncio.run(scenario())


def test_a_session_signed_out_meanwhile_ends_the_stream(asgi_server, acme, quick_keepalives):
    cookies = session_cookie(acme["alice"])

    async def scenario():
        async with httpx.AsyncClient(base_url=asgi_server.url, timeout=10) as client:
            events = await Events(client, cookies).open()
            await events.next()
            await in_thread(lambda: Session.objects.all().delete())  # signed out everywhere
            ended = await events.next("end")
            await events.next("closed")
            return ended

    assert asyncio.run(scenario()) == {"reason": "signed_out"}


def test_no_session_a_stranger_and_someone_outside_the_console_are_refused(asgi_server, acme):
    not_staff = create_person(acme["organization"], "nora", roles=[Role.GOVERNANCE_APPROVER], staff=False)
    not_staff_signed_in = session_cookie(not_staff)

    async def scenario():
        async with httpx.AsyncClient(base_url=asgi_server.url, timeout=10) as client:
            return [
                await client.get(EVENTS),
                await client.get(EVENTS, headers=cookie_header({"sessionid": "not-a-session"})),
                await client.get(EVENTS, headers=cookie_header(not_staff_signed_in)),
            ]

    for response in asyncio.run(scenario()):
        assert response.status_code == 403
        assert response.json() == {"error": "forbidden"}


def test_django_answers_the_stream_url_with_204_so_the_page_polls(client, acme):
    client.force_login(acme["alice"])
    response = client.get(EVENTS)  # the test client is WSGI: the stream is not served here
    assert response.status_code == 204


def test_open_streams_hold_no_thread_and_no_database_connection(acme):
    streams = 20
    cookies = session_cookie(acme["alice"])
    cookie = cookie_header(cookies)["Cookie"].encode()

    def looking_threads_hold_a_connection() -> list[bool]:
        barrier = threading.Barrier(stream_route.LOOK_THREADS, timeout=5)

        def probe():
            barrier.wait()  # one probe per look thread
            return connection.connection is not None

        futures = [stream_route._executor.submit(probe) for _ in range(stream_route.LOOK_THREADS)]
        return [future.result() for future in futures]

    async def scenario():
        leave = asyncio.Event()
        sent: list[list] = [[] for _ in range(streams)]

        def receive_until_left():
            async def receive():
                await leave.wait()
                return {"type": "http.disconnect"}

            return receive

        def collect(into):
            async def send(message):
                into.append(message)

            return send

        scope = {"type": "http", "method": "GET", "path": EVENTS, "headers": [(b"cookie", cookie)]}
        before = bus.waiting_count()
        threads_before = threading.active_count()
        tasks = [
            asyncio.create_task(stream_route.stream_endpoint(scope, receive_until_left(), collect(sent[n]), bus))
            for n in range(streams)
        ]
        await until(lambda: bus.waiting_count() == before + streams, timeout=20)
        await asyncio.sleep(0.5)  # their first looks are done
        threads_open = threading.active_count()
        held = await asyncio.to_thread(looking_threads_hold_a_connection)
        leave.set()
        await asyncio.wait_for(asyncio.gather(*tasks), 5)
        return threads_before, threads_open, held, bus.waiting_count() - before, sent

    threads_before, threads_open, held, still_subscribed, sent = asyncio.run(scenario())
    assert threads_open - threads_before <= stream_route.LOOK_THREADS + 1
    assert held == [False] * stream_route.LOOK_THREADS
    assert still_subscribed == 0
    for messages in sent:
        assert messages[0]["status"] == 200
        assert b"event: inbox" in messages[1]["body"]
        assert not any(message.get("more_body") is False for message in messages)  # nothing sent after it left
