"""The one error shape of Mandate's APIs: ``{"error": "<message or code>"}``.

DRF's ``{"detail": ...}`` never leaks: every exception a view raises comes through
``exception_handler``; errors raised outside views (unknown routes, body limits,
crashes) are rendered by ``error_response`` in ``governance.middleware``.
"""

import logging

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.http import Http404, JsonResponse
from rest_framework import exceptions, status
from rest_framework.response import Response

from governance.control_characters import CONTROL_CHARACTERS
from governance.errors import Conflict, DomainError, GateError, Gone, Invalid, NotFound, Refused, Unavailable

logger = logging.getLogger(__name__)


def error_response(http_status: int, error, **extra) -> JsonResponse:
    return JsonResponse({"error": error, **extra}, status=http_status)


def flatten_validation(detail, path: str = "") -> list[str]:
    """Turn DRF's nested validation detail into ``field: message`` lines."""
    if isinstance(detail, dict):
        lines = []
        for key, value in detail.items():
            name = key if key != "non_field_errors" else ""
            lines += flatten_validation(value, f"{path}.{name}" if path and name else (name or path))
        return lines
    if isinstance(detail, list):
        lines = []
        for index, value in enumerate(detail):
            sub = f"{path}[{index}]" if isinstance(value, dict | list) else path
            lines += flatten_validation(value, sub)
        return lines
    return [f"{path}: {detail}" if path else str(detail)]


class APIError(exceptions.APIException):
    """Raise from a service or view to answer ``{"error": error, **extra}`` with any status."""

    def __init__(self, http_status: int, error, **extra):
        super().__init__(str(error))
        self.status_code = http_status
        self.error = error
        self.extra = extra


# How the ``{"error": ...}`` edges (MIDAS, AIOS Govern) answer each domain error.
DOMAIN_STATUS = {Invalid: 400, Refused: 403, NotFound: 404, Conflict: 409, Gone: 410, Unavailable: 503}


def domain_status(exc: DomainError) -> int:
    for kind, http_status in DOMAIN_STATUS.items():
        if isinstance(exc, kind):
            return http_status
    return 400


def api_error(exc: DomainError) -> "APIError":
    """The ``{"error": ...}`` answer for a domain error. A refusal for want of a permission
    answers as the permission check does, ``{"error": "forbidden", "required_permission": ...}``
    (its message is for people: the inbox shows it)."""
    if isinstance(exc, Refused) and exc.extra.get("required_permission"):
        return APIError(403, "forbidden", **exc.extra)
    return APIError(domain_status(exc), exc.message, **exc.extra)


# A gate error's free-text fields: control characters stripped (no log injection), at most this long.
GATE_REASON_MAX_CHARS = 500


def gate_api_error(exc: GateError) -> "APIError":
    """The action gate's wire form (LatchGate's): ``{"error": code}``, plus ``deny_reason`` and
    ``reason`` when set, sanitized; a 5xx carries only its code."""
    extra = {}
    if exc.status < 500:
        for name in ("deny_reason", "reason"):
            value = getattr(exc, name)
            if value:
                extra[name] = CONTROL_CHARACTERS.sub("", value)[:GATE_REASON_MAX_CHARS]
    return APIError(exc.status, exc.code, **extra)


def exception_handler(exc, context):
    headers = {}
    if isinstance(exc, GateError):
        exc = gate_api_error(exc)
    elif isinstance(exc, DomainError):
        exc = api_error(exc)
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, DjangoPermissionDenied):
        exc = exceptions.PermissionDenied()
    if not isinstance(exc, exceptions.APIException):
        return None  # a real bug: APIErrorMiddleware logs it and answers a JSON 500

    if getattr(exc, "auth_header", None):
        headers["WWW-Authenticate"] = exc.auth_header
    if getattr(exc, "wait", None):
        headers["Retry-After"] = str(int(exc.wait))

    if isinstance(exc, APIError):
        body = {"error": exc.error, **exc.extra}
        if "correlation_id" in exc.extra:  # edut's errors: the id in the body and the header
            headers["X-Correlation-ID"] = exc.extra["correlation_id"]
    elif isinstance(exc, exceptions.ValidationError):
        body = {"error": "; ".join(flatten_validation(exc.detail)) or "invalid request"}
    elif isinstance(exc, exceptions.NotAuthenticated):
        body = {"error": "unauthenticated"}
    elif isinstance(exc, exceptions.AuthenticationFailed):
        body = {"error": str(exc.detail) if exc.detail else "unauthenticated"}
    elif isinstance(exc, exceptions.PermissionDenied):
        body = {"error": "forbidden"}
        required = getattr(exc, "required_permission", None)
        if required:
            body["required_permission"] = required
    elif isinstance(exc, exceptions.ParseError):
        body = {"error": f"malformed request body: {exc.detail}"}
    elif isinstance(exc, exceptions.UnsupportedMediaType):
        body = {"error": f"unsupported content type: {exc.detail}"}
    else:
        detail = exc.detail
        body = {"error": detail if isinstance(detail, str) else "; ".join(flatten_validation(detail))}
    return Response(body, status=exc.status_code, headers=headers)


__all__ = ["APIError", "error_response", "exception_handler", "status"]
