"""The long-poll's ASGI route: ``GET /api/requests/{id}/wait`` answered before Django
(``governance/asgi.py`` dispatches here), with the ``Waiter`` of ``longpoll``."""

import asyncio
import contextlib
import json
import logging
import time

from django.core.serializers.json import DjangoJSONEncoder
from django.db import InterfaceError, OperationalError

from envelopes.requests.longpoll import (
    WAIT_PATH,
    InvalidTimeout,
    Waiter,
    coalesced_lookup,
    parse_wait_timeout,
)
from governance.allowed_hosts import AllowedHosts
from governance.middleware import DATABASE_RETRY_AFTER_SECONDS

logger = logging.getLogger("mandate.request")

SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
    (b"x-frame-options", b"DENY"),
    (b"cache-control", b"no-store"),
]


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


async def _send_json(send, status: int, body: dict, extra_headers=()) -> None:
    content = json.dumps(body, cls=DjangoJSONEncoder, ensure_ascii=False, separators=(",", ":")).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(content)).encode()),
        *SECURITY_HEADERS,
        *extra_headers,
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": content})


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
            await _send_json(
                send, 401, {"error": "unauthenticated"}, [(b"www-authenticate", b'Bearer realm="mandate"')]
            )
            return
        try:
            timeout = parse_wait_timeout(_query_param(scope, "timeout"))
        except InvalidTimeout as exc:
            status = 400
            await _send_json(send, 400, {"error": str(exc)})
            return
        waiter = Waiter(request_id)
        watcher = asyncio.get_running_loop().create_task(_watch_disconnect(receive, waiter))
        result = await waiter.answer(coalesced_lookup, timeout=timeout, api_key=api_key)
        if result is None:
            status = 499  # logged only: the client closed the connection
            return
        status, body = result
        extra = [(b"www-authenticate", b'Bearer realm="mandate"')] if status == 401 else []
        await _send_json(send, status, body, extra)
        # Once the response is complete the server reports http.disconnect to ``receive``:
        # the watcher ends by itself (cancelling 10,000 of them costs more).
        watcher = None
    except (OperationalError, InterfaceError) as exc:
        logger.warning("database unavailable", extra={"path": scope.get("path"), "error": str(exc)})
        status = 503
        with contextlib.suppress(Exception):
            retry_after = [(b"retry-after", str(DATABASE_RETRY_AFTER_SECONDS).encode())]
            await _send_json(send, 503, {"error": "database unavailable; retry later"}, retry_after)
    except Exception:
        logger.exception("unhandled error", extra={"path": scope.get("path"), "method": scope.get("method")})
        status = 500
        with contextlib.suppress(Exception):  # the response had started, or the client is gone
            await _send_json(send, 500, {"error": "internal error"})
    finally:
        if watcher is not None and not watcher.done():
            watcher.cancel()
        if logger.isEnabledFor(logging.INFO):
            logger.info(
                "request",
                extra={
                    "method": "GET",
                    "path": scope.get("path"),
                    "status": status,
                    "duration_ms": round((time.perf_counter() - started) * 1000, 2),
                },
            )


class LongPollRouter:
    """Sends ``GET /api/requests/{id}/wait`` to ``wait_endpoint``; everything else, and a
    wait whose Host Django would refuse (Django answers its 400), to ``app``."""

    def __init__(self, app):
        self.app = app
        self._hosts = AllowedHosts()

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope.get("method") == "GET":
            path = scope.get("path", "")
            root = scope.get("root_path", "")
            if root and path.startswith(root):
                path = path[len(root) :]
            match = WAIT_PATH.match(path)
            if match and self._hosts.allow(dict(scope.get("headers") or ())):
                return await wait_endpoint(scope, receive, send, match["request_id"])
        return await self.app(scope, receive, send)
