"""The action gate's evidence endpoints, in LatchGate's wire form (docs/gate.md "Receipts"):
``GET /v1/receipt-keys``, ``GET /v1/receipts/{id}`` and ``GET /v1/audit/events``."""

import re
from datetime import UTC

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.settings import api_settings
from rest_framework.views import APIView

from evidence.choices import GateDecision, SignatureStatus
from evidence.models import GATE_EVENT_PREFIX, AuditEvent
from evidence.services.gate_events import MAX_LIMIT, GateEventFilter, gate_events
from evidence.services.receipts import GATE_ID, find_receipt, receipt_document, receipt_keys, verify_receipt
from governance.api.authentication import LeaseAuthentication
from governance.api.errors import APIError
from governance.api.permissions import HasRole, credential_of
from governance.choices import Role
from governance.control_characters import has_control_characters
from governance.timestamps import parse_iso_timestamp, rfc3339

DEFAULT_LIMIT = 100
GATE_READERS = (Role.PLATFORM_OPERATOR, Role.PLATFORM_ADMIN)
EVENT_TYPE = re.compile(r"^[A-Za-z0-9_]{1,80}$")


class GateReader(HasRole):
    """Operators and admins (``view.required_roles``), or any credential of a kind the view
    names in ``credential_kinds``: a lease (LeaseAuthentication) carries no roles, so a view
    that takes leases adds its kind there and that authentication class to its own."""

    def has_permission(self, request, view):
        credential = credential_of(request)
        if credential is not None and credential.kind in getattr(view, "credential_kinds", ()):
            return True
        return super().has_permission(request, view)


class ReceiptKeysView(APIView):
    """Every receipt signing key, current and retired, as a JWK set (public keys: no auth)."""

    authentication_classes = []
    permission_classes = [AllowAny]

    @extend_schema(
        summary="Receipt signing keys (JWKS)",
        responses=inline_serializer(
            "ReceiptKeys",
            {
                "keys": serializers.ListField(
                    child=inline_serializer(
                        "ReceiptKey",
                        {
                            "kty": serializers.CharField(),
                            "crv": serializers.CharField(),
                            "x": serializers.CharField(help_text="The raw public key, base64url."),
                            "x_hex": serializers.CharField(help_text="The raw public key, hex (LatchGate's form)."),
                            "kid": serializers.CharField(),
                            "alg": serializers.CharField(),
                            "use": serializers.CharField(),
                            "added_at": serializers.CharField(),
                        },
                    )
                )
            },
        ),
        tags=["gate"],
    )
    def get(self, request):
        return Response(receipt_keys(), headers={"Cache-Control": "public, max-age=300"})


class ReceiptSerializer(serializers.Serializer):
    """The receipt document (``evidence.services.receipts.receipt_document``), for the schema."""

    receipt_id = serializers.CharField()
    grant_id = serializers.CharField()
    provider_module_digest = serializers.CharField()
    provider_receipt = serializers.JSONField()
    normalized_result = serializers.JSONField(help_text="{kind, summary | reason}")
    verification_outcome = serializers.JSONField(help_text="{status, evidence | reason}")
    effect_evidence = serializers.ListField(child=serializers.JSONField())
    result_hash = serializers.CharField(help_text="sha256: + hex SHA-256 of the RFC 8785 form of the hashed fields")
    receipt_signature = serializers.CharField(required=False, help_text="Ed25519 over result_hash's ASCII, hex")
    signing_key_id = serializers.CharField(required=False, help_text="kid in GET /v1/receipt-keys")
    started_at = serializers.CharField()
    finished_at = serializers.CharField()
    failure_class = serializers.CharField(allow_null=True)
    trace_id = serializers.CharField()
    action_id = serializers.CharField()
    session_id = serializers.CharField(allow_null=True)
    signature_status = serializers.ChoiceField(choices=SignatureStatus.choices)


class ReceiptView(APIView):
    """One stored receipt, with what its signature says against the published keys now: for an
    agent with any valid lease (DPoP, bound to GET and this URL) or an operator."""

    authentication_classes = [*api_settings.DEFAULT_AUTHENTICATION_CLASSES, LeaseAuthentication]
    permission_classes = [GateReader]
    required_roles = GATE_READERS
    required_permission = "receipts:read"
    credential_kinds: tuple[str, ...] = ("lease",)

    @extend_schema(
        summary="A receipt",
        responses={
            200: ReceiptSerializer,
            401: OpenApiResponse(description="Unauthenticated"),
            403: OpenApiResponse(description="Neither platform.operator nor platform.admin"),
            404: OpenApiResponse(description='{"error": "not_found"}'),
        },
        tags=["gate"],
    )
    def get(self, request, receipt_id: str):
        receipt = find_receipt(receipt_id) if GATE_ID.match(receipt_id) else None
        if receipt is None:
            raise APIError(404, "not_found")
        return Response({**receipt_document(receipt), "signature_status": verify_receipt(receipt)})


def _query(name: str, description: str, type_=str) -> OpenApiParameter:
    return OpenApiParameter(name, type_, OpenApiParameter.QUERY, required=False, description=description)


def wire_event_type(stored: str) -> str:
    """LatchGate's name of a gate event type: ``GATE_ACTION_CALL`` is ``action_call``."""
    return stored.removeprefix(GATE_EVENT_PREFIX).lower()


def gate_event_item(event: AuditEvent) -> dict:
    """A listed gate event, flat as LatchGate's: the payload's keys, then the event's own
    fields (``gate_event`` keeps the payload off their names)."""
    return {
        **event.payload,
        "timestamp": rfc3339(event.occurred_at),
        "event_type": wire_event_type(event.event_type),
        "id": str(event.id),
        "chain_id": event.chain_id,
        "sequence_no": event.sequence_no,
        "ledger_seq": event.ledger_seq,
        "performer_type": event.performer_type,
        "performer_id": event.performer_id,
        "hash": event.hash,
        "prev_hash": event.prev_hash,
    }


def _invalid(reason: str) -> APIError:
    return APIError(400, "invalid_request", reason=reason)


def gate_event_filter(params) -> GateEventFilter:
    """``GET /v1/audit/events``'s query string as a filter; a 400 naming what is wrong."""
    values = {}
    for name in ("trace_id", "action_id", "principal", "session_id", "decision", "event_type", "after", "before"):
        value = params.get(name) or None
        if value is not None and has_control_characters(value):
            raise _invalid(f"{name} holds control characters")
        values[name] = value
    if values["decision"] is not None and values["decision"] not in GateDecision.values:
        raise _invalid(f"decision must be one of {', '.join(GateDecision.values)}")
    event_type = values["event_type"]
    if event_type is not None:
        if not EVENT_TYPE.match(event_type):
            raise _invalid("event_type is a gate event type such as action_call")
        values["event_type"] = (
            event_type if event_type.startswith(GATE_EVENT_PREFIX) else GATE_EVENT_PREFIX + event_type.upper()
        )
    for bound in ("after", "before"):
        if values[bound] is not None:
            try:
                moment = parse_iso_timestamp(values[bound])
            except ValueError as exc:
                raise _invalid(f"{bound} must be an ISO 8601 timestamp such as 2026-04-18T09:12:04Z") from exc
            values[bound] = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    limit = params.get("limit") or None
    if limit is not None:
        if not (limit.isascii() and limit.lstrip("-").isdigit()):
            raise _invalid("limit must be an integer")
        values["limit"] = min(max(int(limit), 1), MAX_LIMIT)
    return GateEventFilter(**values)


class GateAuditEventsView(APIView):
    """LatchGate's ``GET /v1/audit/events``: the gate's ledger events, newest first."""

    permission_classes = [HasRole]
    required_roles = GATE_READERS
    required_permission = "audit:read"

    @extend_schema(
        summary="The gate's ledger events",
        parameters=[
            _query("trace_id", "Events of this trace."),
            _query("action_id", "Events of this action."),
            _query("principal", "Events of this principal (agent id, or operator for admin events)."),
            _query("session_id", "Events of this lease session."),
            _query("decision", f"One of {', '.join(GateDecision.values)}.", OpenApiTypes.STR),
            _query("event_type", "LatchGate's name (action_call, lease_issued, ...) or Mandate's (GATE_ACTION_CALL)."),
            _query("after", "ISO 8601; events strictly after (no offset: UTC).", OpenApiTypes.DATETIME),
            _query("before", "ISO 8601; events strictly before (no offset: UTC).", OpenApiTypes.DATETIME),
            _query("limit", f"Default {DEFAULT_LIMIT}; values outside 1..{MAX_LIMIT} are clamped.", int),
        ],
        responses={
            200: inline_serializer(
                "GateAuditEvents",
                {"events": serializers.ListField(child=serializers.DictField()), "count": serializers.IntegerField()},
            ),
            400: OpenApiResponse(description='{"error": "invalid_request", "reason": ...}'),
            401: OpenApiResponse(description="Unauthenticated"),
            403: OpenApiResponse(description="Neither platform.operator nor platform.admin"),
        },
        tags=["gate"],
    )
    def get(self, request):
        events = [gate_event_item(event) for event in gate_events(gate_event_filter(request.query_params))]
        return Response({"events": events, "count": len(events)})
