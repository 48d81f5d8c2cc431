"""The notification bus that wakes long-poll waiters when a request changes.

``publish(request_id)`` is called after a decision commits, from synchronous code, in any
process (the ASGI server deciding in the inbox, a Celery worker applying a timeout):

- waiters of this process are woken directly (``wake_local``);
- with ``settings.REDIS_URL`` the id is also PUBLISHed on the Redis channel
  ``mandate:requests``, by a publisher thread, so the decision never waits on Redis and a
  burst of decisions leaves as a few pipelined messages of many ids each. Every process
  with waiters runs ONE ``redis.asyncio`` subscriber per event loop, started by the first
  waiter, which wakes its local waiters.

The bus only says "look again": a woken waiter re-reads the request from the database,
which stays the truth. Redis pub/sub is at-most-once and the embedded default (no Redis)
has no cross-process path at all, so every waited-for request is also re-checked in the
database every ``MANDATE_LONGPOLL_RECHECK_SECONDS`` (``envelopes.requests.longpoll``): a lost
message delays an answer, it never loses one.
"""

import asyncio
import atexit
import contextlib
import logging
import os
import queue
import secrets
import threading
import time
from collections import defaultdict

import redis
import redis.asyncio
from django.conf import settings

logger = logging.getLogger(__name__)

CHANNEL = "mandate:requests"
PUBLISH_TIMEOUT_SECONDS = 0.5
# After a failed Redis publish, skip Redis for this long: deciding must not wait on a dead
# Redis once per decision. Waiters elsewhere catch up at their next re-check.
PUBLISH_BACKOFF_SECONDS = 5.0
RECONNECT_DELAYS = (0.5, 1.0, 2.0, 5.0, 10.0)

_waiters: dict[str, dict[asyncio.Event, asyncio.AbstractEventLoop]] = defaultdict(dict)
_lock = threading.Lock()


# --- local waiters ----------------------------------------------------------------------


def subscribe(request_id: str) -> asyncio.Event:
    """An event set when ``request_id`` changes; call from the waiter's event loop."""
    loop = asyncio.get_running_loop()
    event = asyncio.Event()
    with _lock:
        _waiters[str(request_id)][event] = loop
    if settings.REDIS_URL:
        _listener_for(loop)
    return event


def unsubscribe(request_id: str, event: asyncio.Event) -> None:
    with _lock:
        waiters = _waiters.get(str(request_id))
        if waiters is not None:
            waiters.pop(event, None)
            if not waiters:
                del _waiters[str(request_id)]


def waiting_count() -> int:
    with _lock:
        return sum(len(w) for w in _waiters.values())


def waited_ids(loop: asyncio.AbstractEventLoop) -> list[str]:
    """The requests someone waits for on ``loop``."""
    with _lock:
        return [request_id for request_id, group in _waiters.items() if loop in group.values()]


def _set(waiters) -> int:
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    woken = 0
    for event, loop in waiters:
        if loop is running:
            event.set()
        else:
            try:
                loop.call_soon_threadsafe(event.set)
            except RuntimeError:  # that loop has closed: its waiter is gone
                continue
        woken += 1
    return woken


def wake_local(request_id: str) -> int:
    with _lock:
        waiters = list(_waiters.get(str(request_id), {}).items())
    return _set(waiters)


def wake_all_local() -> int:
    """Every waiter of this process looks again (after the subscriber missed messages)."""
    with _lock:
        waiters = [w for group in _waiters.values() for w in group.items()]
    return _set(waiters)


# --- publishing (sync, never raises) ------------------------------------------------------

MAX_IDS_PER_MESSAGE = 500

_client: redis.Redis | None = None
_client_url = ""
_skip_redis_until = 0.0
_origin_token: tuple[int, str] = (0, "")
_outbox: queue.SimpleQueue = queue.SimpleQueue()
_publisher: tuple[int, threading.Thread] | None = None
_publisher_lock = threading.Lock()
_unsent = 0  # queued or being sent; guarded by _publisher_lock


def _origin() -> str:
    """This process's token in messages, so its own subscriber skips what it already woke.
    Renewed after a fork (Celery's prefork children publish too)."""
    global _origin_token
    pid = os.getpid()
    if _origin_token[0] != pid:
        _origin_token = (pid, secrets.token_hex(8))
    return _origin_token[1]


def _redis() -> redis.Redis:
    global _client, _client_url
    url = settings.REDIS_URL
    if _client is None or _client_url != url:
        _client = redis.Redis.from_url(
            url, socket_timeout=PUBLISH_TIMEOUT_SECONDS, socket_connect_timeout=PUBLISH_TIMEOUT_SECONDS
        )
        _client_url = url
    return _client


def publish(request_id: str) -> None:
    """Wake the request's waiters in every process. Call after commit; never raises, never
    waits on Redis: the id is handed to this process's publisher thread."""
    request_id = str(request_id)
    try:
        wake_local(request_id)
    except Exception:
        logger.exception("bus: waking local waiters failed", extra={"request_id": request_id})
    if settings.REDIS_URL and time.monotonic() >= _skip_redis_until:
        _ensure_publisher()
        _count_unsent(1)
        _outbox.put(request_id)


def publish_many(request_ids) -> None:
    """``publish`` each id (the core decision path's notifier)."""
    for request_id in request_ids:
        publish(request_id)


def _count_unsent(delta: int) -> None:
    global _unsent
    with _publisher_lock:
        _unsent += delta


def _ensure_publisher() -> None:
    global _publisher
    pid = os.getpid()
    if _publisher is not None and _publisher[0] == pid and _publisher[1].is_alive():
        return
    with _publisher_lock:
        if _publisher is None or _publisher[0] != pid or not _publisher[1].is_alive():
            thread = threading.Thread(target=_publish_forever, name="mandate-bus-publisher", daemon=True)
            thread.start()
            _publisher = (pid, thread)


def _drain(first: str | None = None) -> list[str]:
    ids = [first] if first is not None else []
    while True:
        try:
            ids.append(_outbox.get_nowait())
        except queue.Empty:
            return ids


def _send(ids: list[str]) -> None:
    """PUBLISH the ids, many to a message, in one pipelined round trip."""
    global _skip_redis_until
    if not ids:
        return
    origin = _origin()
    try:
        pipe = _redis().pipeline(transaction=False)
        for start in range(0, len(ids), MAX_IDS_PER_MESSAGE):
            pipe.publish(CHANNEL, " ".join([origin, *ids[start : start + MAX_IDS_PER_MESSAGE]]))
        pipe.execute()
    except Exception as exc:
        _skip_redis_until = time.monotonic() + PUBLISH_BACKOFF_SECONDS
        logger.warning(
            "bus: Redis publish failed; other processes see the changes at their next re-check",
            extra={"requests": len(ids), "error": str(exc)},
        )
    finally:
        _count_unsent(-len(ids))


def _publish_forever() -> None:
    # Whatever queued up while the previous round trip was in flight goes out together:
    # deciding 10,000 requests at once is a few dozen messages, not 10,000.
    while True:
        _send(_drain(_outbox.get()))


def flush(timeout: float = PUBLISH_TIMEOUT_SECONDS) -> None:
    """Send what is still queued (at exit: a short-lived process that just decided)."""
    deadline = time.monotonic() + timeout
    while _unsent > 0 and time.monotonic() < deadline:
        if _outbox.empty():
            time.sleep(0.005)  # the publisher thread is sending them
        else:
            _send(_drain())


atexit.register(flush)


# --- the Redis subscriber (one per event loop) --------------------------------------------


class _Subscriber:
    def __init__(self, loop: asyncio.AbstractEventLoop, url: str):
        self.url = url
        self.ready = asyncio.Event()
        self.task = loop.create_task(self._run(), name="mandate-bus-subscriber")

    async def _run(self):
        attempt = 0
        while True:
            client = redis.asyncio.Redis.from_url(self.url, socket_connect_timeout=2, health_check_interval=30)
            pubsub = client.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(CHANNEL)
                if attempt:
                    # Messages published while we were away are lost: everyone looks again.
                    wake_all_local()
                    logger.info("bus: Redis subscriber reconnected")
                attempt = 0
                self.ready.set()
                async for message in pubsub.listen():
                    self._deliver(message.get("data"))
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                logger.warning("bus: Redis subscriber lost its connection", extra={"error": str(exc)})
            finally:
                self.ready.clear()
                with contextlib.suppress(Exception):  # closing a broken connection may fail too
                    await pubsub.aclose()
                with contextlib.suppress(Exception):
                    await client.aclose()
            await asyncio.sleep(RECONNECT_DELAYS[min(attempt, len(RECONNECT_DELAYS) - 1)])
            attempt += 1

    @staticmethod
    def _deliver(data) -> None:
        """A message is ``"<origin> <request id> <request id> ..."``."""
        if isinstance(data, bytes):
            data = data.decode("utf-8", "replace")
        if not isinstance(data, str):
            return
        origin, *request_ids = data.split()
        if origin == _origin():
            return  # published here: ``publish`` already woke this process's waiters
        for request_id in request_ids:
            wake_local(request_id)


_subscribers: dict[asyncio.AbstractEventLoop, _Subscriber] = {}


def _listener_for(loop: asyncio.AbstractEventLoop) -> _Subscriber:
    subscriber = _subscribers.get(loop)
    if subscriber is None or subscriber.task.done() or subscriber.url != settings.REDIS_URL:
        for old in [old for old in list(_subscribers) if old.is_closed()]:
            _subscribers.pop(old, None)
        if subscriber is not None and not subscriber.task.done():
            subscriber.task.cancel()
        subscriber = _subscribers[loop] = _Subscriber(loop, settings.REDIS_URL)
    return subscriber


async def ready(timeout: float = 1.0) -> bool:
    """Wait (briefly) until this loop's Redis subscriber listens, so a waiter that checks the
    database next cannot miss a message sent in between. True without Redis."""
    if not settings.REDIS_URL:
        return True
    subscriber = _listener_for(asyncio.get_running_loop())
    if subscriber.ready.is_set():
        return True
    try:
        await asyncio.wait_for(subscriber.ready.wait(), timeout)
    except TimeoutError:
        return False
    return True
