"""The long-poll's ASGI route: ``GET /api/requests/{id}/wait`` answered before Django
(``governance/asgi.py`` dispatches here), with the ``Waiter`` of ``longpoll``."""

import asyncio
import time

from envelopes.requests.longpoll import (
    WAIT_PATH,
    InvalidTimeout,
    Waiter,
    coalesced_lookup,
    parse_wait_timeout,
)
from governance.allowed_hosts import AllowedHosts
from governance.front_routes import log_request, route_path, send_failure, send_json


def _header(scope, name: bytes) -> str:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return value.decode("latin-1")
    return ""


def _query_param(scope, name: str) -> str | None:
    from urllib.parse import parse_qsl

    value = None
    for key, item in parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True):
        if key == name:
            value = item  # the last one wins, as in Django's QueryDict.get
    return value


async def _watch_disconnect(receive, waiter: Waiter) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            waiter.leave()
            return


async def wait_endpoint(scope, receive, send, request_id: str) -> None:
    """The ASGI app for ``GET /api/requests/{request_id}/wait``."""
    from envelopes.requests.api.authentication import channel_key_from_header

    started = time.perf_counter()
    status = 500
    watcher = None
    try:
        api_key = channel_key_from_header(_header(scope, b"authorization"))
        if api_key is None:
            status = 401
            await send_json(send, 401, {"error": "unauthenticated"}, [(b"www-authenticate", b'Bearer realm="mandate"')])
            return
        try:
            timeout = parse_wait_timeout(_query_param(scope, "timeout"))
        except InvalidTimeout as exc:
            status = 400
            await send_json(send, 400, {"error": str(exc)})
            return
        waiter = Waiter(request_id)
        watcher = asyncio.get_running_loop().create_task(_watch_disconnect(receive, waiter))
        result = await waiter.answer(coalesced_lookup, timeout=timeout, api_key=api_key)
        if result is None:
            status = 499  # logged only: the client closed the connection
            return
        status, body = result
        extra = [(b"www-authenticate", b'Bearer realm="mandate"')] if status == 401 else []
        await send_json(send, status, body, extra)
        # Once the response is complete the server reports http.disconnect to ``receive``:
        # the watcher ends by itself (cancelling 10,000 of them costs more).
        watcher = None
    except Exception as exc:
        status = await send_failure(send, scope, exc)
    finally:
        if watcher is not None and not watcher.done():
            watcher.cancel()
        log_request("GET", scope.get("path"), status, started)


class LongPollRouter:
    """Sends ``GET /api/requests/{id}/wait`` to ``wait_endpoint``; everything else, and a
    wait whose Host Django would refuse (Django answers its 400), to ``app``."""

    def __init__(self, app):
        self.app = app
        self._hosts = AllowedHosts()

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope.get("method") == "GET":
            match = WAIT_PATH.match(route_path(scope))
            if match and self._hosts.allow(dict(scope.get("headers") or ())):
                return await wait_endpoint(scope, receive, send, match["request_id"])
        return await self.app(scope, receive, send)
