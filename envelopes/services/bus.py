"""The notification bus that wakes long-poll waiters when a request changes.

``publish`` is called after a decision commits; waiters in this process are woken
directly. (Cross-process delivery — Redis pub/sub or Postgres LISTEN/NOTIFY — and the
periodic re-check fallback are layered on this interface.)
"""

import asyncio
import threading
from collections import defaultdict

_waiters: dict[str, set[tuple[asyncio.AbstractEventLoop, asyncio.Event]]] = defaultdict(set)
_lock = threading.Lock()


def subscribe(request_id: str) -> asyncio.Event:
    """An event set when ``request_id`` changes; call from the waiter's event loop."""
    event = asyncio.Event()
    with _lock:
        _waiters[request_id].add((asyncio.get_running_loop(), event))
    return event


def unsubscribe(request_id: str, event: asyncio.Event) -> None:
    with _lock:
        waiters = _waiters.get(request_id)
        if waiters:
            waiters.difference_update({w for w in waiters if w[1] is event})
            if not waiters:
                del _waiters[request_id]


def wake_local(request_id: str) -> int:
    with _lock:
        waiters = list(_waiters.get(request_id, ()))
    for loop, event in waiters:
        loop.call_soon_threadsafe(event.set)
    return len(waiters)


def publish(request_id: str) -> None:
    wake_local(request_id)
