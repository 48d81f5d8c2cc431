"""Request-level guards for the API routes: body limits, JSON errors, access logs."""

import logging
import time

from django.conf import settings
from django.db import InterfaceError, OperationalError
from django.shortcuts import redirect
from django.urls import reverse
from django.utils.deprecation import MiddlewareMixin

from governance.api.errors import error_response

logger = logging.getLogger("mandate.request")


def is_api_path(path: str) -> bool:
    return path.startswith(settings.MANDATE_API_PREFIXES)


# MiddlewareMixin makes each of these work in sync and async chains alike, so async
# views (long-polls) are never pinned to a thread by the middleware around them.


class RequestLogMiddleware(MiddlewareMixin):
    """One structured line per API request (method, path, status, duration). Never headers."""

    def process_request(self, request):
        request._mandate_started = time.perf_counter()

    def process_response(self, request, response):
        started = getattr(request, "_mandate_started", None)
        if started is not None and is_api_path(request.path):
            logger.info(
                "request",
                extra={
                    "method": request.method,
                    "path": request.path,
                    "status": response.status_code,
                    "duration_ms": round((time.perf_counter() - started) * 1000, 2),
                },
            )
        return response


class APIBodyLimitMiddleware(MiddlewareMixin):
    """413 for API bodies over the limit: ``max_body_bytes`` on the view, else the setting.

    Checked against Content-Length first, then against what was actually received,
    so chunked bodies cannot slip past.
    """

    def process_view(self, request, view_func, view_args, view_kwargs):
        if not is_api_path(request.path) or request.method in ("GET", "HEAD", "OPTIONS", "DELETE"):
            return None
        view_class = getattr(view_func, "cls", None) or getattr(view_func, "view_class", None)
        limit = getattr(view_class, "max_body_bytes", None) or settings.MANDATE_MAX_BODY_BYTES
        # MIDAS answers 400 for oversized bundles; views say so with body_too_large_status.
        too_large = error_response(
            getattr(view_class, "body_too_large_status", 413), f"request body too large (limit {limit} bytes)"
        )
        try:
            declared = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            return error_response(400, "invalid Content-Length")
        if declared > limit:
            return too_large
        if len(request.body) > limit:
            return too_large
        return None


# Seconds a client should wait before retrying when the database is unreachable.
DATABASE_RETRY_AFTER_SECONDS = 2


def database_unavailable_response():
    """503 for a request the database could not serve: nothing was acknowledged, retry."""
    response = error_response(503, "database unavailable; retry later")
    response["Retry-After"] = str(DATABASE_RETRY_AFTER_SECONDS)
    return response


class APIErrorMiddleware(MiddlewareMixin):
    """Unhandled errors on API routes answer JSON, never an HTML traceback; the database
    unreachable (connection lost, pool timeout) is a 503 with Retry-After."""

    def process_exception(self, request, exception):
        return api_error_response(request, exception)


def api_error_response(request, exception):
    """The API's answer to an unhandled ``exception`` (None off the API routes). Also what
    ``handler500`` answers, for errors raised in middleware before any view (a session
    lookup with the database gone)."""
    if not is_api_path(request.path):
        return None
    if isinstance(exception, OperationalError | InterfaceError):
        logger.warning(
            "database unavailable",
            extra={"path": request.path, "method": request.method, "error": str(exception)},
        )
        return database_unavailable_response()
    logger.exception("unhandled error", extra={"path": request.path, "method": request.method})
    return error_response(500, "internal error")


class PasswordChangeRequiredMiddleware(MiddlewareMixin):
    """Bootstrap accounts must choose their own password before using the console."""

    def process_request(self, request):
        user = getattr(request, "user", None)
        if not (user and user.is_authenticated and getattr(user, "must_change_password", False)):
            return None
        target = reverse("account_change_password")
        if request.path.startswith("/admin/"):
            return redirect(f"{target}?next={request.path}")
        return None
