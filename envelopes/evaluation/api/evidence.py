"""``/v1/evidence/*``: envelope audit chains, integrity verdicts and signed evidence packets
(MIDAS-compatible; the packet's signature is Mandate's addition).

Every endpoint needs platform.viewer or above and sees only the caller's organization's
envelopes: an envelope of another organization is a 404, its events never match a search.
"""

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from envelopes.evaluation.api.serializers import EnvelopeSerializer
from envelopes.services.integrity import (
    EventSearch,
    check_envelope_integrity,
    decode_position,
    encode_position,
    envelope_event_items,
    envelope_events,
    search_envelope_events,
)
from envelopes.services.packets import build_packet
from envelopes.services.queries import envelope_by_id, parse_envelope_id
from evidence.choices import ChainErrorKind
from governance.api.errors import APIError
from governance.api.permissions import HasRole
from governance.api.query_params import MAX_LIMIT, parse_limit, timestamp_param
from governance.api.tenancy import request_organization
from governance.choices import Role
from governance.control_characters import CONTROL_CHARACTERS
from governance.errors import Invalid

DEFAULT_LIMIT = 100
MAX_EVENT_TYPES = 50


class _Output(serializers.Serializer):
    """Response shapes, for the schema only."""


class AuditEventItemSerializer(_Output):
    id = serializers.UUIDField()
    envelope_id = serializers.UUIDField()
    request_source = serializers.CharField()
    request_id = serializers.CharField()
    sequence_no = serializers.IntegerField()
    event_type = serializers.CharField()
    performer_type = serializers.CharField()
    performer_id = serializers.CharField()
    payload = serializers.JSONField()
    occurred_at = serializers.CharField(help_text="UTC, always six fractional digits: exactly the hashed string.")
    hash = serializers.CharField()
    prev_hash = serializers.CharField()


class EnvelopeAuditEventsSerializer(_Output):
    envelope_id = serializers.UUIDField()
    items = AuditEventItemSerializer(many=True)
    count = serializers.IntegerField()


class AuditEventPageSerializer(_Output):
    items = AuditEventItemSerializer(many=True)
    count = serializers.IntegerField(help_text="Events on this page.")
    next_cursor = serializers.CharField(allow_null=True, help_text="Pass as cursor for the next page; null at the end.")


class ChainIntegritySerializer(_Output):
    envelope_id = serializers.UUIDField()
    valid = serializers.BooleanField()
    chain_length = serializers.IntegerField(help_text="Events stored in the chain.")
    first_event_hash = serializers.CharField()
    final_event_hash = serializers.CharField()
    checked_at = serializers.CharField()
    error_kind = serializers.ChoiceField(ChainErrorKind.choices, required=False)
    error_message = serializers.CharField(required=False)


class EvidencePacketSerializer(_Output):
    envelope_id = serializers.UUIDField()
    generated_at = serializers.CharField()
    envelope = EnvelopeSerializer()
    audit_events = AuditEventItemSerializer(many=True)
    integrity = ChainIntegritySerializer()
    alg = serializers.CharField(help_text='Always "EdDSA" (Ed25519).')
    kid = serializers.CharField(help_text="The signing key's id in /.well-known/jwks.json.")
    signature = serializers.CharField(
        help_text="base64url (no padding) Ed25519 signature over the RFC 8785 canonical JSON of the packet "
        "without signature and kid."
    )


ENVELOPE_ID = OpenApiParameter("envelope_id", OpenApiTypes.UUID, OpenApiParameter.PATH)
ERRORS = {
    400: OpenApiResponse(description="Invalid envelope id"),
    401: OpenApiResponse(description="Unauthenticated"),
    403: OpenApiResponse(description="Insufficient role (platform.viewer or above)"),
    404: OpenApiResponse(description="No such envelope in the caller's organization"),
}


def _query(name: str, description: str, type_=OpenApiTypes.STR) -> OpenApiParameter:
    return OpenApiParameter(name, type_, OpenApiParameter.QUERY, required=False, description=description)


class EvidenceView(APIView):
    permission_classes = [HasRole]
    required_roles = (Role.PLATFORM_VIEWER,)  # admin and operator imply viewer
    required_permission = "evidence:read"

    def envelope(self, envelope_id: str):
        return envelope_by_id(request_organization(self.request), envelope_id)


class EnvelopeAuditEventsView(EvidenceView):
    @extend_schema(
        parameters=[ENVELOPE_ID],
        responses={200: EnvelopeAuditEventsSerializer, **ERRORS},
        tags=["evidence"],
        summary="An envelope's audit events in chain order",
    )
    def get(self, request, envelope_id):
        envelope = self.envelope(envelope_id)
        items = envelope_event_items(envelope, envelope_events(envelope))
        return Response({"envelope_id": envelope.chain_id, "items": items, "count": len(items)})


class EnvelopeIntegrityView(EvidenceView):
    @extend_schema(
        parameters=[ENVELOPE_ID],
        responses={200: ChainIntegritySerializer, **ERRORS},
        tags=["evidence"],
        summary="Verify an envelope's audit chain (a broken chain is 200 with valid false)",
    )
    def get(self, request, envelope_id):
        return Response(check_envelope_integrity(self.envelope(envelope_id)))


class EnvelopePacketView(EvidenceView):
    @extend_schema(
        parameters=[ENVELOPE_ID],
        responses={200: EvidencePacketSerializer, **ERRORS},
        tags=["evidence"],
        summary="Signed evidence packet: envelope, audit events and integrity, verifiable offline",
    )
    def get(self, request, envelope_id):
        return Response(build_packet(self.envelope(envelope_id)))


def _text(params, name: str, max_length: int = 255) -> str:
    value = params.get(name, "").strip()
    if len(value) > max_length or CONTROL_CHARACTERS.search(value):
        raise APIError(400, f"invalid {name}")
    return value


def _event_search(params) -> EventSearch:
    event_types = tuple(dict.fromkeys(t.strip() for t in params.get("event_types", "").split(",") if t.strip()))
    if len(event_types) > MAX_EVENT_TYPES or any(len(t) > 80 or CONTROL_CHARACTERS.search(t) for t in event_types):
        raise APIError(400, f"invalid event_types (a comma-separated list of at most {MAX_EVENT_TYPES} event types)")
    envelope_id = params.get("envelope_id", "").strip()
    if envelope_id:
        try:
            envelope_id = str(parse_envelope_id(envelope_id))
        except Invalid as exc:
            raise APIError(400, "invalid envelope_id") from exc
    since, until = (params.get(name, "").strip() for name in ("since", "until"))
    since = timestamp_param("since", since) if since else None
    until = timestamp_param("until", until) if until else None
    if since and until and since > until:
        raise APIError(400, "since must not be after until")
    order = params.get("order", "asc").strip().lower() or "asc"
    if order not in ("asc", "desc"):
        raise APIError(400, "order must be asc or desc")
    return EventSearch(
        event_type=_text(params, "event_type", 80),
        event_types=event_types,
        envelope_id=envelope_id,
        request_source=_text(params, "request_source"),
        request_id=_text(params, "request_id"),
        since=since,
        until=until,
        descending=order == "desc",
    )


class AuditEventSearchView(EvidenceView):
    @extend_schema(
        parameters=[
            _query("event_type", "Exact event type, e.g. ESCALATION_PENDING."),
            _query("event_types", "Comma-separated event types; any of them matches."),
            _query("envelope_id", "Only this envelope's events.", OpenApiTypes.UUID),
            _query("request_source", "Only events of envelopes with this request_source."),
            _query("request_id", "Only events of envelopes with this request_id."),
            _query("since", "RFC 3339; events at or after this instant.", OpenApiTypes.DATETIME),
            _query("until", "RFC 3339; events at or before this instant.", OpenApiTypes.DATETIME),
            _query("limit", f"1..{MAX_LIMIT}, default {DEFAULT_LIMIT}.", OpenApiTypes.INT),
            _query("order", "asc (default, oldest first) or desc, by occurred_at then envelope and sequence_no."),
            _query("cursor", "The next_cursor of the previous page (same order)."),
        ],
        responses={
            200: AuditEventPageSerializer,
            400: OpenApiResponse(description="Invalid filter, limit, order or cursor"),
            401: OpenApiResponse(description="Unauthenticated"),
            403: OpenApiResponse(description="Insufficient role (platform.viewer or above)"),
        },
        tags=["evidence"],
        summary="Search the audit events of the organization's envelopes",
    )
    def get(self, request):
        params = request.query_params
        search = _event_search(params)
        limit = parse_limit(params.get("limit", "").strip(), DEFAULT_LIMIT)
        cursor = params.get("cursor", "").strip()
        after = decode_position(cursor, search.descending) if cursor else None
        page = search_envelope_events(request_organization(request), search, limit, after)
        next_cursor = encode_position(page.next_position, search.descending) if page.next_position else None
        return Response({"items": page.items, "count": len(page.items), "next_cursor": next_cursor})
