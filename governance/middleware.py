"""Request-level guards: API body limits, JSON errors and access logs; the pending password change."""

import logging
import time
from urllib.parse import urlsplit

from django.conf import settings
from django.contrib.auth.views import redirect_to_login
from django.db import InterfaceError, OperationalError
from django.urls import reverse
from django.utils.deprecation import MiddlewareMixin
from django.utils.http import url_has_allowed_host_and_scheme

from governance.api.errors import error_response
from governance.api.permissions import password_change_required

logger = logging.getLogger("mandate.request")


def is_api_path(path: str) -> bool:
    return path.startswith(settings.MANDATE_API_PREFIXES)


# MiddlewareMixin makes each of these work in sync and async chains alike, so async
# views (long-polls) are never pinned to a thread by the middleware around them.


class RequestLogMiddleware(MiddlewareMixin):
    """One structured line per API request (method, path, status, duration, and the
    installer's correlation id when the answer carries one). Never headers otherwise."""

    def process_request(self, request):
        request._mandate_started = time.perf_counter()

    def process_response(self, request, response):
        started = getattr(request, "_mandate_started", None)
        if started is not None and is_api_path(request.path):
            extra = {
                "method": request.method,
                "path": request.path,
                "status": response.status_code,
                "duration_ms": round((time.perf_counter() - started) * 1000, 2),
            }
            if response.has_header("X-Correlation-ID"):
                extra["correlation_id"] = response["X-Correlation-ID"]
            logger.info("request", extra=extra)
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


# Views a person who must change their password may still use: the change page (and its
# set-password twin, where allauth sends accounts without a usable password), every way to
# sign out, the JSON change endpoint, health probes and the favicon. Everything else is held
# back; tests/test_password_change_gate.py walks every URL pattern against this list.
PASSWORD_CHANGE_EXEMPT_VIEWS = frozenset(
    {
        "account_change_password",
        "account_set_password",
        "account_logout",
        "admin:logout",
        "auth-logout",
        "auth-change-password",
        "healthz",
        "readyz",
        "favicon",
    }
)


class PasswordChangeRequiredMiddleware(MiddlewareMixin):
    """A session of a person flagged ``must_change_password`` (signed in with a temporary
    password) opens nothing but the password change: pages redirect to it with ``?next=``,
    API calls answer ``403 {"error": "password change required", ...}``.

    Static files never reach a view (the static handler serves them). An API call that brings
    its own credential (``Authorization``) is left to its authenticators: a token is not held
    back, and a header no token authenticator claims falls back to the session, which
    ``IsAuthenticatedPrincipal`` holds back with the same answer. Pages read no tokens.
    """

    def process_view(self, request, view_func, view_args, view_kwargs):
        user = getattr(request, "user", None)
        if not (user and user.is_authenticated and getattr(user, "must_change_password", False)):
            return None
        if request.resolver_match.view_name in PASSWORD_CHANGE_EXEMPT_VIEWS:
            return None
        api = is_api_path(request.path)
        if api and request.headers.get("Authorization"):
            return None
        if answers_json(request, api):
            held_back = password_change_required()
            return error_response(held_back.status_code, held_back.error, **held_back.extra)
        return redirect_to_login(
            page_to_return_to(request), login_url=reverse("account_change_password"), redirect_field_name="next"
        )


def answers_json(request, api: bool) -> bool:
    """API routes answer JSON unless a browser navigates to them (Swagger UI is a page);
    a script asking a page for JSON (the inbox's live poll) gets JSON too."""
    accept = request.headers.get("Accept", "")
    if "text/html" in accept:
        return False
    return api or "application/json" in accept


def page_to_return_to(request) -> str:
    """Where the password change leads back to: the page asked for, or for a form sent from a
    page of this site, that page; else the front door."""
    if request.method in ("GET", "HEAD"):
        return request.get_full_path()
    referer = request.headers.get("Referer", "")
    if referer and url_has_allowed_host_and_scheme(referer, {request.get_host()}, request.is_secure()):
        parts = urlsplit(referer)
        return parts.path + (f"?{parts.query}" if parts.query else "")
    return "/"
