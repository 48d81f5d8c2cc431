"""Who sent a request and how to find it again: the request id and client IP audit records carry."""

import ipaddress
import re
import uuid

from django.conf import settings

from governance.gate.ids import new_id

# Echoed from the caller when it looks like an id (no spaces or control characters), so a
# client's own correlation id can be searched for; anything else is replaced.
_REQUEST_ID = re.compile(r"[\x21-\x7e]{1,255}")


def _http_request(request):
    return getattr(request, "_request", request)  # a DRF Request wraps Django's HttpRequest


def request_id_of(request) -> str:
    """The caller's ``X-Request-ID``, else a generated UUID; the same value for the whole request."""
    http_request = _http_request(request)
    cached = getattr(http_request, "_mandate_request_id", None)
    if cached:
        return cached
    supplied = (http_request.META.get("HTTP_X_REQUEST_ID") or "").strip()
    request_id = supplied if _REQUEST_ID.fullmatch(supplied) else str(uuid.uuid4())
    http_request._mandate_request_id = request_id
    return request_id


def _valid_ip(value: str) -> str:
    try:
        return str(ipaddress.ip_address(value.strip()))
    except ValueError:
        return ""


def client_ip_of(request) -> str:
    """The client's address: ``REMOTE_ADDR``, or, behind a proxy (``SECURE_PROXY_SSL_HEADER``
    set), the last ``X-Forwarded-For`` entry — the one our proxy appended; earlier entries
    are whatever the client claimed. ``""`` when nothing valid is known."""
    meta = _http_request(request).META
    if getattr(settings, "SECURE_PROXY_SSL_HEADER", None):
        forwarded = (meta.get("HTTP_X_FORWARDED_FOR") or "").split(",")[-1]
        if ip := _valid_ip(forwarded):
            return ip
    return _valid_ip(meta.get("REMOTE_ADDR") or "")


def new_correlation_id() -> str:
    """edut's correlation id: ``req_`` + a UUIDv7."""
    return new_id("req")


def correlation_id_of(request) -> str:
    """The request's correlation id, the same for the whole request (error bodies, the
    ``X-Correlation-ID`` header, logs)."""
    http_request = _http_request(request)
    correlation_id = getattr(http_request, "_mandate_correlation_id", None)
    if correlation_id is None:
        correlation_id = http_request._mandate_correlation_id = new_correlation_id()
    return correlation_id


def adopt_correlation_id(request, correlation_id: str) -> None:
    """Make ``correlation_id`` the request's: its answer was made, and its id named, by a
    service the view drove (a hot route's)."""
    _http_request(request)._mandate_correlation_id = correlation_id
