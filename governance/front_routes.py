"""What the ASGI routes answered in front of Django (the long-poll, the inbox's stream) say
as Django would: JSON answers with the security headers, the 503 for a database that is
gone and the 500 for a bug, and the access-log line (Django's own requests get theirs from
``governance.middleware.RequestLogMiddleware``)."""

import contextlib
import json
import logging
import time

from django.core.serializers.json import DjangoJSONEncoder
from django.db import InterfaceError, OperationalError

from governance.middleware import DATABASE_RETRY_AFTER_SECONDS

logger = logging.getLogger("mandate.request")

SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
    (b"x-frame-options", b"DENY"),
    (b"cache-control", b"no-store"),
]


async def send_json(send, status: int, body: dict, extra_headers=()) -> None:
    content = json.dumps(body, cls=DjangoJSONEncoder, ensure_ascii=False, separators=(",", ":")).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(content)).encode()),
        *SECURITY_HEADERS,
        *extra_headers,
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": content})


async def send_failure(send, scope, exc: Exception) -> int:
    """Answer an exception a route did not handle: 503 with Retry-After when the database is
    unreachable, 500 (logged) otherwise; nothing when the response had started or the client
    is gone. The status, for the access log."""
    if isinstance(exc, OperationalError | InterfaceError):
        logger.warning("database unavailable", extra={"path": scope.get("path"), "error": str(exc)})
        with contextlib.suppress(Exception):
            retry_after = [(b"retry-after", str(DATABASE_RETRY_AFTER_SECONDS).encode())]
            await send_json(send, 503, {"error": "database unavailable; retry later"}, retry_after)
        return 503
    logger.error("unhandled error", exc_info=exc, extra={"path": scope.get("path"), "method": scope.get("method")})
    with contextlib.suppress(Exception):
        await send_json(send, 500, {"error": "internal error"})
    return 500


def route_path(scope) -> str:
    """The request's path as Django's URLconf sees it (without the ``root_path`` it is mounted at)."""
    path = scope.get("path", "")
    root = scope.get("root_path", "")
    return path[len(root) :] if root and path.startswith(root) else path


def log_request(method: str, path, status: int, started: float, correlation_id: str | None = None) -> None:
    """One line per request: method, path, status, duration, and the installer's correlation
    id when the answer carries one (as ``RequestLogMiddleware`` writes it; never headers)."""
    if logger.isEnabledFor(logging.INFO):
        extra = {
            "method": method,
            "path": path,
            "status": status,
            "duration_ms": round((time.perf_counter() - started) * 1000, 2),
        }
        if correlation_id is not None:
            extra["correlation_id"] = correlation_id
        logger.info("request", extra=extra)
