"""The inbox's live stream: ``GET /admin/envelopes/approvalrequest/live/events/``, server-sent
events answered in front of Django (``governance/asgi.py`` puts ``InboxStreamRouter`` there),
as the agents' long-poll is.

Why in front of Django: a Django async view keeps a thread for each open request (its
synchronous request signals run through ``sync_to_async``), and every signed-in inbox tab
holds its stream open for minutes. Here an open stream is a coroutine waiting on the
notification bus; it holds no thread and no database connection. Each look (``stream``) runs
in a small thread pool and hands its connection back at once.

1. The session cookie is checked as the inbox checks it (staff of an organization); else 403.
2. The stream subscribes to its organization's key on the bus (``decide.organization_key``:
   the core announces every envelope that arrives or changes under it), sends ``retry`` and
   a first ``inbox`` event, then sends an ``inbox`` event each time a look after a
   notification finds the inbox changed for this person.
3. Every ``MANDATE_INBOX_KEEPALIVE_SECONDS`` a ``: keepalive`` comment keeps proxies from
   closing it, and the session and the inbox are looked at again (a notification lost, or
   sent by a process the bus does not reach, is late, never lost; a signed-out session gets
   an ``end`` event and the stream closes).
4. The client leaving (``http.disconnect``) ends it at once; after
   ``MANDATE_INBOX_STREAM_SECONDS`` it ends by itself and the browser reconnects.
"""

import asyncio
import contextlib
import json
import logging
import time
from concurrent.futures import ThreadPoolExecutor

from django.conf import settings
from django.core.serializers.json import DjangoJSONEncoder
from django.db import InterfaceError, OperationalError, connection
from django.http.cookie import parse_cookie
from django.urls import get_script_prefix, reverse

from envelopes.inbox import stream
from envelopes.services.decide import organization_key
from governance.allowed_hosts import AllowedHosts
from governance.front_routes import SECURITY_HEADERS, log_request, route_path, send_failure, send_json

logger = logging.getLogger("mandate.request")

LOOK_THREADS = 2
RETRY_MILLISECONDS = 2000  # how soon the browser reconnects after the stream ends
SETTLE_SECONDS = 0.15  # after a notification, wait this long: a burst of changes is one look
HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"x-accel-buffering", b"no"),  # proxies must pass events on as they come
    *SECURITY_HEADERS,
]

_executor = ThreadPoolExecutor(max_workers=LOOK_THREADS, thread_name_prefix="mandate-inbox-stream")


def _and_release(function, *args):
    try:
        return function(*args)
    finally:
        connection.close()  # back to the pool: an open stream holds no connection


async def _in_thread(function, *args):
    return await asyncio.get_running_loop().run_in_executor(_executor, _and_release, function, *args)


def event_bytes(name: str, data: dict) -> bytes:
    body = json.dumps(data, cls=DjangoJSONEncoder, ensure_ascii=False, separators=(",", ":"))
    return f"event: {name}\ndata: {body}\n\n".encode()


KEEPALIVE = b": keepalive\n\n"


def _session_key(scope) -> str:
    """The session cookie's value, read as Django reads cookies (its ``parse_cookie``)."""
    cookies = {}
    for key, value in scope.get("headers", ()):
        if key.lower() == b"cookie":
            cookies.update(parse_cookie(value.decode("latin-1")))
    return cookies.get(settings.SESSION_COOKIE_NAME, "")


class Stream:
    """One open stream: one person's inbox, sent as it changes."""

    def __init__(self, bus, receive, send, session_key: str, look: stream.Look):
        self.bus, self.receive, self.send = bus, receive, send
        self.session_key, self.look = session_key, look
        self.gone = False
        self.key = organization_key(look.viewer.organization.pk)
        self.changed: asyncio.Event | None = None

    async def _watch_disconnect(self) -> None:
        while True:
            message = await self.receive()
            if message["type"] == "http.disconnect":
                self.gone = True
                if self.changed is not None:
                    self.changed.set()
                return

    async def _write(self, body: bytes) -> None:
        await self.send({"type": "http.response.body", "body": body, "more_body": True})

    async def _wait(self, timeout: float) -> bool:
        """True when a notification (or the client leaving) came before ``timeout``."""
        try:
            await asyncio.wait_for(self.changed.wait(), timeout)
        except TimeoutError:
            return False
        return True

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        keepalive = float(settings.MANDATE_INBOX_KEEPALIVE_SECONDS)
        ends = loop.time() + float(settings.MANDATE_INBOX_STREAM_SECONDS)
        self.changed = self.bus.subscribe(self.key)
        watcher = loop.create_task(self._watch_disconnect())
        try:
            await self.bus.ready()
            await self.send({"type": "http.response.start", "status": 200, "headers": HEADERS})
            await self._write(f"retry: {RETRY_MILLISECONDS}\n\n".encode() + event_bytes("inbox", self.look.event))
            self.changed.set()  # look once more now that we listen: nothing committed meanwhile is missed
            beat = loop.time() + keepalive
            while not self.gone and loop.time() < ends:
                notified = await self._wait(max(0.0, min(beat, ends) - loop.time()))
                if self.gone:
                    break
                if notified:
                    await asyncio.sleep(SETTLE_SECONDS)
                    self.changed.clear()
                    look = await _in_thread(stream.look_again, self.look.viewer, self.look.state)
                elif loop.time() < ends:
                    beat = loop.time() + keepalive
                    await self._write(KEEPALIVE)
                    look = await _in_thread(stream.look_again, self.look.viewer, self.look.state, self.session_key)
                else:
                    break
                if look is None:
                    await self._write(event_bytes("end", {"reason": "signed_out"}))
                    break
                self.look = look
                if look.event is not None and not self.gone:
                    await self._write(event_bytes("inbox", look.event))
        except (OperationalError, InterfaceError) as exc:
            logger.warning("inbox stream: database unavailable", extra={"error": str(exc)})
        finally:
            self.bus.unsubscribe(self.key, self.changed)
            if not watcher.done():
                watcher.cancel()
        if not self.gone:
            with contextlib.suppress(Exception):  # the client may leave as we finish
                await self.send({"type": "http.response.body", "body": b"", "more_body": False})


async def stream_endpoint(scope, receive, send, bus) -> None:
    """The ASGI app for the inbox's live stream; ``bus`` is the notification bus
    (``subscribe``, ``unsubscribe``, ``ready``)."""
    started = time.perf_counter()
    status = 200
    try:
        session_key = _session_key(scope)
        look = await _in_thread(stream.open_look, session_key) if session_key else None
        if look is None:
            status = 403
            await send_json(send, 403, {"error": "forbidden"})
            return
        await Stream(bus, receive, send, session_key, look).run()
    except Exception as exc:
        status = await send_failure(send, scope, exc)
    finally:
        log_request("GET", scope.get("path"), status, started)


class InboxStreamRouter:
    """Sends ``GET`` of the inbox's stream URL (``admin:envelopes_inbox_events``) to
    ``stream_endpoint``; everything else, and a request whose Host Django would refuse, to
    ``app``. Django's own view at that URL answers 204: the page then polls."""

    def __init__(self, app, bus):
        self.app, self.bus = app, bus
        self._hosts = AllowedHosts()
        self._path: str | None = None

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope.get("method") == "GET":
            if self._path is None:  # the URL Django's view has, without any script prefix
                self._path = "/" + reverse("admin:envelopes_inbox_events")[len(get_script_prefix()) :]
            if route_path(scope) == self._path and self._hosts.allow(dict(scope.get("headers") or ())):
                return await stream_endpoint(scope, receive, send, self.bus)
        return await self.app(scope, receive, send)
