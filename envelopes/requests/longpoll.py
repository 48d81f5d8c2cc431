"""``GET /api/requests/{id}/wait``: the agent's long-poll, served by a small ASGI route in
front of Django (``governance/asgi.py`` dispatches it here).

Why not a Django async view: Django runs its synchronous ``request_started`` /
``request_finished`` receivers through ``sync_to_async`` for every async request and keeps
that thread for the request's life, so 10,000 waiting agents were 10,000 threads. This route
holds no thread and no database connection while it waits:

1. One short lookup — the channel key and the request's state — runs in a small thread
   pool and hands its connection back at once. Lookups of waiters that arrive or wake
   together share one query (``_Coalescer``), so deciding 10,000 requests costs a few dozen
   queries, not 10,000.
2. Decided → 200 with ``decision_payload``; a change request open → 200 with the
   ``tweak_requested`` event; otherwise wait on the notification bus (``bus.subscribe``),
   with a timer for the deadline and a watcher for the client going away. None of these
   is a thread. One task per event loop re-checks every waited-for request every
   ``MANDATE_LONGPOLL_RECHECK_SECONDS`` in two queries per 5,000 and wakes those that
   changed (the fallback when no notification comes).
3. Woken → the same short lookup; still pending → wait on; deadline → 408 with AIOS's body
   ``{"error": {"code": "timeout", "message": "Decision pending"}}``.

The DRF view at the same URL (``envelopes.requests.api.channels.RequestWaitView``, for WSGI and
Django's test client) runs the same ``Waiter`` with a plain lookup.
"""

import asyncio
import logging
import math
import re
import uuid
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from types import SimpleNamespace

from django.conf import settings
from django.db import connection
from django.db.models.expressions import RawSQL

from envelopes.choices import FINAL_REQUEST_STATUSES, ChannelStatus, RequestStatus, TweakStatus
from envelopes.requests import bus
from envelopes.requests.submissions import MAX_LONG_POLL_SECONDS

logger = logging.getLogger("mandate.request")

TIMEOUT_BODY = {"error": {"code": "timeout", "message": "Decision pending"}}
NOT_FOUND_BODY = {"error": "request not found"}
WAIT_PATH = re.compile(r"^/api/requests/(?P<request_id>[^/]+)/wait$")
LOOKUP_THREADS = 2
DEADLINE_SLACK = 0.005  # seconds: timers may fire this early
MAX_BATCH = 500

# Answer kinds.
PENDING = "pending"
READY = "ready"  # decided, or a tweak event: answer now
NOT_FOUND = "not_found"  # no such request on this channel
UNAUTHENTICATED = "unauthenticated"


class InvalidTimeout(ValueError):
    pass


def parse_wait_timeout(raw: str | None) -> float | None:
    """``?timeout=`` in seconds (decimals allowed), capped at 300; None: the request's own
    ``long_poll_timeout_seconds``. Anything else is an InvalidTimeout (400)."""
    if raw is None or raw.strip() == "":
        return None
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0:
        raise InvalidTimeout(f"timeout: must be a number of seconds from 0 to {MAX_LONG_POLL_SECONDS}")
    return min(value, float(MAX_LONG_POLL_SECONDS))


@dataclass(frozen=True)
class Lookup:
    request_id: uuid.UUID | None  # None: the URL's id is not a UUID (authenticate, then 404)
    channel_id: uuid.UUID | None = None  # known channel (DRF-authenticated, or a re-check)
    api_key: str | None = None  # to authenticate first


@dataclass(frozen=True)
class Answer:
    kind: str
    body: dict | None = None
    channel_id: uuid.UUID | None = None
    default_timeout: int = 60


def ids_in(field: str, ids) -> dict:
    """``{field}__in`` for many ids. On PostgreSQL the ids travel as ONE array parameter:
    a thousand placeholders cost more to bind (in Python) than the query costs to run."""
    if connection.vendor == "postgresql":
        return {f"{field}__in": RawSQL("SELECT unnest(%s::uuid[])", [[str(i) for i in ids]])}
    return {f"{field}__in": list(ids)}


class RequestRow:
    """A request as ``decision_payload`` and ``tweak_payload`` read it, without the cost of a
    model instance: waking 10,000 waiters reads 10,000 rows. (test_longpoll checks that both
    payloads come out the same as from the model.)"""

    FIELDS = (
        "pk",
        "channel_id",
        "channel__status",
        "type",
        "status",
        "tweak_allowed",
        "long_poll_timeout_seconds",
        "decided_by",
        "decision_time",
        "comments",
        "choice",
        "input_text",
    )
    __slots__ = (*FIELDS, "envelope")

    def __init__(self, values: tuple):
        for name, value in zip(self.FIELDS, values[:-1], strict=True):
            setattr(self, name, value)
        self.envelope = SimpleNamespace(submitted_raw=values[-1])

    @classmethod
    def fetch(cls, ids) -> dict:
        from envelopes.models import ApprovalRequest

        query = ApprovalRequest.objects.filter(**ids_in("pk", ids)).values_list(*cls.FIELDS, "envelope__submitted_raw")
        return {row.pk: row for row in map(cls, query)}


def lookup_answers(lookups: list[Lookup]) -> list[Answer]:
    """The state of each looked-up request as its waiter sees it: one query for the
    requests, one for open change requests, one per distinct channel key."""
    from envelopes.models import Tweak
    from envelopes.requests.channels import authenticate_channel_key
    from envelopes.requests.decisions import decision_payload, tweak_payload

    channels: dict[str, uuid.UUID | None] = {}
    for key in {item.api_key for item in lookups if item.api_key is not None}:
        channel = authenticate_channel_key(key)
        channels[key] = channel.pk if channel is not None else None
    ids = {item.request_id for item in lookups if item.request_id is not None}
    requests = RequestRow.fetch(ids) if ids else {}
    tweakable = [pk for pk, r in requests.items() if r.status not in FINAL_REQUEST_STATUSES and r.tweak_allowed]
    open_tweaks = {}
    if tweakable:
        tweaks = Tweak.objects.filter(**ids_in("request_id", tweakable), status=TweakStatus.OPEN)
        for tweak in tweaks.order_by("created_at"):
            open_tweaks[tweak.request_id] = tweak  # the newest wins (there is at most one)

    answers = []
    for item in lookups:
        channel_id = channels.get(item.api_key) if item.api_key is not None else item.channel_id
        if channel_id is None:
            answers.append(Answer(UNAUTHENTICATED))
            continue
        request = requests.get(item.request_id)
        if request is None or request.channel_id != channel_id:
            answers.append(Answer(NOT_FOUND, channel_id=channel_id))
        elif request.channel__status != ChannelStatus.ACTIVE:
            answers.append(Answer(UNAUTHENTICATED))  # revoked while its agent waited
        elif request.status in FINAL_REQUEST_STATUSES:
            answers.append(Answer(READY, decision_payload(request), channel_id))
        elif request.pk in open_tweaks:
            tweak = open_tweaks[request.pk]
            answers.append(Answer(READY, tweak_payload(request, tweak, "tweak_requested"), channel_id))
        else:
            answers.append(Answer(PENDING, None, channel_id, request.long_poll_timeout_seconds))
    return answers


LookupFunction = Callable[[Lookup], Awaitable[Answer]]


async def direct_lookup(item: Lookup) -> Answer:
    """One lookup in Django's thread-sensitive executor (the DRF view's path, under WSGI or the
    test client: the request's own thread and connection)."""
    from asgiref.sync import sync_to_async

    (answer,) = await sync_to_async(lookup_answers)([item])
    return answer


class Waiter:
    """One agent waiting for one request's decision."""

    def __init__(self, request_id: str):
        try:
            self.request_id: uuid.UUID | None = uuid.UUID(request_id)
        except ValueError:
            self.request_id = None
        self.event: asyncio.Event | None = None
        self.gone = False

    def leave(self) -> None:
        """The client went away: stop waiting."""
        self.gone = True
        if self.event is not None:
            self.event.set()

    async def answer(
        self,
        lookup: LookupFunction,
        *,
        timeout: float | None,
        api_key: str | None = None,
        channel_id: uuid.UUID | None = None,
    ) -> tuple[int, dict] | None:
        """(HTTP status, body), or None when the client left."""
        if self.request_id is None:
            answer = await lookup(Lookup(None, channel_id, api_key))
            return _response(answer)
        key = str(self.request_id)
        loop = asyncio.get_running_loop()
        # Subscribe before the first look, so a decision committed in between still wakes us.
        self.event = event = bus.subscribe(key)
        timer = None
        try:
            await bus.ready()
            answer = await lookup(Lookup(self.request_id, channel_id, api_key))
            if answer.kind != PENDING:
                return _response(answer)
            channel_id = answer.channel_id
            deadline = loop.time() + (answer.default_timeout if timeout is None else timeout)
            _rechecker_for(loop)
            while True:
                remaining = deadline - loop.time()
                if remaining <= DEADLINE_SLACK:
                    return 408, TIMEOUT_BODY
                if timer is not None:
                    timer.cancel()
                timer = loop.call_later(remaining, event.set)
                await event.wait()  # a notification, the re-check finding a change, the deadline, or leave()
                event.clear()
                if self.gone:
                    return None
                answer = await lookup(Lookup(self.request_id, channel_id))
                if answer.kind != PENDING:
                    return _response(answer)
        finally:
            if timer is not None:
                timer.cancel()
            bus.unsubscribe(key, event)


def _response(answer: Answer) -> tuple[int, dict]:
    if answer.kind == READY:
        return 200, answer.body
    if answer.kind == UNAUTHENTICATED:
        return 401, {"error": "invalid or revoked channel key"}
    if answer.kind == NOT_FOUND:
        return 404, NOT_FOUND_BODY
    return 408, TIMEOUT_BODY


# --- lookups for the ASGI route: pooled threads, coalesced, connection handed back ----------

_executor = ThreadPoolExecutor(max_workers=LOOKUP_THREADS, thread_name_prefix="mandate-longpoll")


def _lookup_and_release(lookups: list[Lookup]) -> list[Answer]:
    try:
        return lookup_answers(lookups)
    finally:
        connection.close()  # back to the pool: waiting holds no connection


class _Coalescer:
    """Lookups queued in the same loop iteration (or while all lookup threads are busy)
    run as one batch."""

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self.loop = loop
        self.queue: list[tuple[Lookup, asyncio.Future]] = []
        self.scheduled = False
        self.running = 0

    async def lookup(self, item: Lookup) -> Answer:
        future = self.loop.create_future()
        self.queue.append((item, future))
        self._schedule()
        return await future

    def _schedule(self) -> None:
        if not self.scheduled and self.queue and self.running < LOOKUP_THREADS:
            self.scheduled = True
            self.loop.call_soon(self._flush)

    def _flush(self) -> None:
        self.scheduled = False
        batch, self.queue = self.queue[:MAX_BATCH], self.queue[MAX_BATCH:]
        if batch:
            self.running += 1
            self.loop.create_task(self._run(batch))
        self._schedule()

    async def _run(self, batch) -> None:
        try:
            answers = await self.loop.run_in_executor(_executor, _lookup_and_release, [item for item, _ in batch])
        except Exception as exc:
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
        else:
            for (_, future), answer in zip(batch, answers, strict=True):
                if not future.done():
                    future.set_result(answer)
        finally:
            self.running -= 1
            self._schedule()


_coalescers: dict[asyncio.AbstractEventLoop, _Coalescer] = {}


# --- the periodic re-check: the fallback when a notification never comes ---------------------

RECHECK_CHUNK = 5000


def changed_requests(request_ids: list[str]) -> list[str]:
    """Which of these requests are no longer simply pending: decided, or with a change
    request open. A few cheap queries for any number of waiters."""
    from envelopes.models import ApprovalRequest, Tweak

    changed = []
    for start in range(0, len(request_ids), RECHECK_CHUNK):
        chunk = request_ids[start : start + RECHECK_CHUNK]
        decided = ApprovalRequest.objects.filter(**ids_in("pk", chunk)).exclude(status=RequestStatus.PENDING)
        changed += decided.values_list("pk", flat=True)
        tweaked = Tweak.objects.filter(**ids_in("request_id", chunk), status=TweakStatus.OPEN)
        changed += tweaked.values_list("request_id", flat=True)
    return [str(request_id) for request_id in changed]


def _changed_and_release(request_ids: list[str]) -> list[str]:
    try:
        return changed_requests(request_ids)
    finally:
        connection.close()


async def _recheck_forever(loop: asyncio.AbstractEventLoop) -> None:
    """Every MANDATE_LONGPOLL_RECHECK_SECONDS, every request waited for in this loop is looked
    at again (two queries per 5,000), and the waiters of those that changed are woken, so a
    decision made where no notification reaches us (another process without Redis, a lost
    pub/sub message) is still answered — late, never lost."""
    while True:
        await asyncio.sleep(float(settings.MANDATE_LONGPOLL_RECHECK_SECONDS))
        request_ids = bus.waited_ids(loop)
        if not request_ids:
            continue
        try:
            changed = await loop.run_in_executor(_executor, _changed_and_release, request_ids)
        except Exception:
            logger.exception("long-poll re-check failed")
            continue
        for request_id in changed:
            bus.wake_local(request_id)


_recheckers: dict[asyncio.AbstractEventLoop, asyncio.Task] = {}


def _rechecker_for(loop: asyncio.AbstractEventLoop) -> None:
    task = _recheckers.get(loop)
    if task is None or task.done():
        for old in [old for old in list(_recheckers) if old.is_closed()]:
            _recheckers.pop(old, None)
        _recheckers[loop] = loop.create_task(_recheck_forever(loop), name="mandate-longpoll-recheck")


def coalesced_lookup(item: Lookup) -> Awaitable[Answer]:
    loop = asyncio.get_running_loop()
    coalescer = _coalescers.get(loop)
    if coalescer is None:
        for old in [old for old in list(_coalescers) if old.is_closed()]:
            _coalescers.pop(old, None)
        coalescer = _coalescers[loop] = _Coalescer(loop)
    return coalescer.lookup(item)
