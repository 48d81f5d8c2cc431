"""``POST /governance/lease/heartbeat``: a device's launcher keeps its availability lease alive
(edut's installer; docs/device_leases.md).

A hot route (``governance.hotpath``): answered in front of Django for plain requests
(``governance/asgi.py``), and by this Django view, driving the same steps, for everything
else, so both answer alike. Refusals are edut's body ``{"error": code, "code": code,
"correlation_id": "req_...", "reason": ...}`` with the status of ``INSTALL_STATUS``; every
answer carries ``X-Correlation-ID``, and refusals are logged with it."""

import logging

from django.conf import settings
from django.db import DatabaseError
from django.utils.http import parse_header_parameters
from drf_spectacular.utils import OpenApiResponse, extend_schema, inline_serializer
from rest_framework import exceptions, serializers
from rest_framework.negotiation import BaseContentNegotiation
from rest_framework.permissions import AllowAny
from rest_framework.response import Response

from governance.api.install_errors import INSTALL_STATUS
from governance.api.parsers import parse_strict_json
from governance.api.request_meta import adopt_correlation_id, new_correlation_id
from governance.api.wallets import ERROR_BODY, CorrelatedView
from governance.hotpath import HotRequest, HotRoute, drive
from governance.services.device_leases import heartbeat, refresh_leases, wallet_session_secret
from governance.services.install_rules import InstallRefused, invalid
from governance.timestamps import rfc3339_isoformat

logger = logging.getLogger(__name__)

MAX_BODY_BYTES = 4096  # four short fields; beyond: 413
CORRELATION_HEADER = "X-Correlation-ID"
CHALLENGE = ("WWW-Authenticate", 'Bearer realm="mandate"')
ALLOW = ("Allow", "POST, OPTIONS")  # as DRF sets it on the view's answers


def _body_reader(body: bytes):
    def read():
        try:
            return parse_strict_json(body)
        except exceptions.ParseError as exc:
            raise invalid("body", str(exc.detail)) from None

    return read


def refusal(correlation_id: str, status: int, code: str, reason: str) -> tuple[int, dict, tuple]:
    logger.info("heartbeat refused: %s (%s)", code, correlation_id)
    headers = (ALLOW, (CORRELATION_HEADER, correlation_id))
    if status == 401:
        headers += (CHALLENGE,)
    return status, {"error": code, "code": code, "correlation_id": correlation_id, "reason": reason}, headers


def heartbeat_answer(request: HotRequest):
    """The heartbeat's steps (``governance.services.device_leases.heartbeat``) and their
    answer: ``(status, body, headers)``."""
    correlation_id = new_correlation_id()
    try:
        refreshed = yield from heartbeat(
            wallet_session_secret(request.headers.get("authorization")), _body_reader(request.body)
        )
    except InstallRefused as refused:
        return refusal(correlation_id, INSTALL_STATUS.get(refused.code, 400), refused.code, refused.message)
    except DatabaseError as exc:
        logger.warning("heartbeat: database unavailable (%s): %s", correlation_id, exc)
        return refusal(correlation_id, 503, "service_unavailable", "the database is unavailable; retry later")
    if refreshed.revived:
        logger.info("heartbeat revived a parked device (%s)", correlation_id)
    body = {
        "status": "lease_refreshed",
        "availability_state": "active",
        "lease_expires_at": rfc3339_isoformat(refreshed.lease_expires_at),
    }
    return 200, body, (ALLOW, (CORRELATION_HEADER, correlation_id))


def unexpected(exc: Exception) -> tuple[int, dict, tuple]:
    """A failure ``heartbeat_answer`` did not answer (a bug): 500, logged."""
    correlation_id = new_correlation_id()
    logger.error("heartbeat: internal error (%s)", correlation_id, exc_info=exc)
    return refusal(correlation_id, 500, "internal_error", "internal error")


HEARTBEAT = HotRoute(
    path="/governance/lease/heartbeat",
    method="POST",
    service=heartbeat_answer,
    errors=unexpected,
    record=refresh_leases,  # one UPDATE per group commit
    max_batch=settings.MANDATE_HEARTBEAT_GROUP_COMMIT,
    max_body_bytes=MAX_BODY_BYTES,
    enabled=settings.MANDATE_HEARTBEAT_FAST_ROUTE,
)


class JSONOnly(BaseContentNegotiation):
    """JSON whatever the Accept header says, as the hot path answers."""

    def select_parser(self, request, parsers):
        return parsers[0]

    def select_renderer(self, request, renderers, format_suffix=None):
        return renderers[0], renderers[0].media_type


class HeartbeatView(CorrelatedView):
    """Django's answer: the hot route's steps, driven synchronously (``hotpath.drive``)."""

    authentication_classes = []
    permission_classes = [AllowAny]
    content_negotiation_class = JSONOnly
    max_body_bytes = MAX_BODY_BYTES

    @extend_schema(
        request=inline_serializer(
            "Heartbeat",
            {
                "wallet": serializers.CharField(),
                "org_root_id": serializers.CharField(),
                "principal_id": serializers.CharField(),
                "device_id": serializers.CharField(),
            },
        ),
        responses={
            200: inline_serializer(
                "LeaseRefreshed",
                {
                    "status": serializers.CharField(help_text="lease_refreshed"),
                    "availability_state": serializers.CharField(help_text="active"),
                    "lease_expires_at": serializers.DateTimeField(),
                },
            ),
            400: OpenApiResponse(ERROR_BODY, description="invalid_request, address_checksum_invalid"),
            401: OpenApiResponse(ERROR_BODY, description="wallet_session_invalid"),
            403: OpenApiResponse(
                ERROR_BODY, description="wallet_mismatch, wallet_not_owner, membership_inactive, entitlement_inactive"
            ),
            404: OpenApiResponse(
                ERROR_BODY, description="organization_not_found, principal_not_found, device_not_found"
            ),
            409: OpenApiResponse(ERROR_BODY, description="device_not_installed"),
            415: OpenApiResponse(ERROR_BODY, description="the body is not application/json"),
        },
        tags=["installs"],
        summary="Refresh a device's availability lease (and revive a parked device)",
    )
    def post(self, request):
        media_type, params = parse_header_parameters(request.content_type or "")
        if media_type.lower() != "application/json" or params.get("charset", "utf-8").lower() not in ("utf-8", "utf8"):
            raise exceptions.UnsupportedMediaType(request.content_type or "none")
        http_request = request._request
        headers = {name.lower(): value for name, value in http_request.headers.items()}
        status, body, extra = drive(HEARTBEAT, HotRequest("POST", http_request.path, {}, headers, http_request.body))
        headers = dict(extra)
        adopt_correlation_id(request, headers.pop(CORRELATION_HEADER))
        return Response(body, status=status, headers=headers)
