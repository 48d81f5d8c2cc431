"""AIOS Govern's agent API: ``POST /api/register-channel``, ``POST /api/channels/{id}/requests``,
``GET /api/requests/{id}`` and ``GET /api/requests/{id}/wait``.

Every call but registration carries the channel's key (``Authorization: Bearer mdc_...``)
and sees only its own channel: another channel's request is a 404, as is another
channel's id in the URL. Under the ASGI server ``/wait`` is answered by
``envelopes.requests.longpoll`` before Django is reached; the view here serves WSGI and the test
client with the same ``Waiter``.
"""

import uuid

from asgiref.sync import async_to_sync
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiParameter,
    OpenApiResponse,
    PolymorphicProxySerializer,
    extend_schema,
    inline_serializer,
)
from rest_framework import serializers
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import APIView

from envelopes.choices import (
    FINAL_REQUEST_STATUSES,
    OnTimeout,
    RequestStatus,
    RequestType,
    ReturnMode,
    RiskLevel,
    Route,
)
from envelopes.models import ApprovalRequest
from envelopes.requests.api.authentication import ChannelKeyAuthentication, IsChannel, channel_of
from envelopes.requests.channels import register_channel
from envelopes.requests.decisions import current_tweak_event, decision_payload
from envelopes.requests.longpoll import InvalidTimeout, Waiter, direct_lookup, parse_wait_timeout
from envelopes.requests.submissions import MAX_LONG_POLL_SECONDS, MAX_PAYLOAD_BYTES, submit_request
from governance.api.errors import APIError
from governance.api.fields import StringField
from governance.timestamps import rfc3339_isoformat

TAGS = ["channels"]
MAX_SUBMISSION_BYTES = 512 * 1024
# --- shapes (documentation; the service validates the envelope itself) -----------------------


class RegisterChannelRequestSerializer(serializers.Serializer):
    invite_token = StringField(max_length=200, help_text="The single-use token of an invite URL (mdi_...).")
    name = StringField(required=False, allow_blank=True, max_length=200, help_text="A name for the channel.")
    agent_id = StringField(
        required=False, allow_blank=True, max_length=255, help_text="Bind the channel to this declared Agent."
    )


class RegisterChannelResponseSerializer(serializers.Serializer):
    channel_id = serializers.UUIDField()
    api_key = serializers.CharField(help_text="The channel's API key (mdc_...). Shown once.")
    webhook_secret = serializers.CharField(help_text="Signs webhook deliveries (whsec_...). Shown once.")


class EnvelopeSubmissionSerializer(serializers.Serializer):
    type = serializers.ChoiceField(RequestType.choices)
    title = serializers.CharField(max_length=300)
    summary = serializers.CharField(required=False, max_length=10_000)
    risk_level = serializers.ChoiceField(RiskLevel.choices, required=False, help_text="Default medium.")
    payload = serializers.JSONField(
        required=False,
        help_text=f"Any JSON, at most {MAX_PAYLOAD_BYTES // 1024} KiB. choice: {{options: [...]}}; spend_approval: "
        "{amount, currency}; poll_request: {poll_url (https), poll_render_hint, ...}.",
    )
    approval_rule = serializers.JSONField(
        required=False,
        help_text='{"type": "single"} (default) | {"type": "sequential", "steps": [...]} | '
        '{"type": "n_of_x", "required": N, "approvers": [...]}. Approvers: a person\'s id, or '
        '{"user": id|email|username}, {"team": id}, {"role": name}.',
    )
    route = serializers.ChoiceField(Route.choices, required=False, help_text="Default approval.")
    team_id = serializers.UUIDField(required=False, help_text="Required for approve_team and notify_team_owner.")
    bg_color = serializers.CharField(required=False, help_text="#rrggbb")
    badge = serializers.CharField(required=False, max_length=40, help_text="URGENT renders red.")
    accent_bar = serializers.CharField(required=False, help_text="A color name or #rrggbb.")
    pulse = serializers.ChoiceField(["none", "light", "strong"], required=False)
    top_sort = serializers.BooleanField(required=False)
    expires_at = serializers.DateTimeField(required=False, help_text="RFC 3339, in the future.")
    on_timeout = serializers.ChoiceField(OnTimeout.choices, required=False, help_text="Needs expires_at.")
    tweak_allowed = serializers.BooleanField(required=False)
    parent_envelope_id = serializers.UUIDField(
        required=False, help_text="The request whose change request this new card answers."
    )
    return_mode = serializers.ChoiceField(ReturnMode.choices, required=False)
    return_webhook = serializers.URLField(required=False, help_text="https (http only when private targets are on).")
    long_poll_timeout_seconds = serializers.IntegerField(
        required=False, min_value=1, max_value=MAX_LONG_POLL_SECONDS, help_text="Default 60."
    )


class SubmittedRequestSerializer(serializers.Serializer):
    request_id = serializers.UUIDField()
    status = serializers.ChoiceField(RequestStatus.choices, help_text="pending (log_only: acknowledged)")
    created_at = serializers.DateTimeField()
    expires_at = serializers.DateTimeField(allow_null=True)


class DecisionSerializer(serializers.Serializer):
    request_id = serializers.UUIDField()
    status = serializers.ChoiceField(RequestStatus.choices)
    approved_by = serializers.CharField(allow_null=True, help_text="A person's id, or 'system'.")
    decision_time = serializers.DateTimeField(allow_null=True)
    comments = serializers.CharField(allow_blank=True)
    choice = serializers.JSONField(required=False, help_text="choice requests: the option picked.")
    input = serializers.CharField(required=False, help_text="input_request requests: the person's answer.")
    envelope_snapshot = serializers.JSONField(help_text="The envelope as submitted.")


class TweakEventSerializer(serializers.Serializer):
    event = serializers.ChoiceField(["tweak_requested"])
    request_id = serializers.UUIDField()
    tweak_id = serializers.UUIDField()
    request_text = serializers.CharField()
    requested_by = serializers.CharField(help_text="The person's id.")
    envelope_snapshot = serializers.JSONField()


class ApprovalVoteSerializer(serializers.Serializer):
    person_id = serializers.UUIDField()
    approve = serializers.BooleanField()
    step = serializers.IntegerField()
    at = serializers.DateTimeField()


class RequestDetailSerializer(serializers.Serializer):
    request_id = serializers.UUIDField()
    status = serializers.ChoiceField(RequestStatus.choices)
    type = serializers.ChoiceField(RequestType.choices)
    title = serializers.CharField()
    created_at = serializers.DateTimeField()
    expires_at = serializers.DateTimeField(allow_null=True)
    decision = DecisionSerializer(allow_null=True)
    tweak = TweakEventSerializer(allow_null=True, help_text="The open change request, if any.")
    approvals = ApprovalVoteSerializer(many=True)


WaitAnswerSerializer = PolymorphicProxySerializer(
    component_name="WaitAnswer",
    serializers=[DecisionSerializer, TweakEventSerializer],
    resource_type_field_name=None,
)
WaitTimeoutSerializer = inline_serializer(
    "WaitTimeout",
    {
        "error": inline_serializer(
            "WaitTimeoutError", {"code": serializers.CharField(), "message": serializers.CharField()}
        )
    },
)
UNAUTHORIZED = OpenApiResponse(description="No channel key, or an invalid or revoked one")


# --- views -------------------------------------------------------------------------------


class ChannelView(APIView):
    """Base for the calls an agent makes with its channel key."""

    authentication_classes = [ChannelKeyAuthentication]
    permission_classes = [IsChannel]

    @property
    def channel(self):
        return channel_of(self.request)

    def channel_request(self, request_id: str) -> ApprovalRequest:
        try:
            pk = uuid.UUID(str(request_id))
        except ValueError:
            raise APIError(404, "request not found") from None
        found = ApprovalRequest.objects.select_related("envelope").filter(pk=pk, channel=self.channel).first()
        if found is None:
            raise APIError(404, "request not found")
        return found


class RegisterChannelView(APIView):
    authentication_classes = []
    permission_classes = [AllowAny]

    @extend_schema(
        request=RegisterChannelRequestSerializer,
        responses={
            201: RegisterChannelResponseSerializer,
            400: OpenApiResponse(description="Missing or unknown invite_token, or an undeclared agent_id"),
            410: OpenApiResponse(description="The invite was already used, or has expired"),
        },
        tags=TAGS,
        summary="Register an agent channel with an invite token",
        auth=[],
    )
    def post(self, request):
        serializer = RegisterChannelRequestSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        body = serializer.validated_data
        channel, api_key, secret = register_channel(
            body["invite_token"], name=body.get("name") or "", agent_id=body.get("agent_id") or ""
        )
        return Response({"channel_id": str(channel.pk), "api_key": api_key, "webhook_secret": secret}, status=201)


class ChannelRequestsView(ChannelView):
    max_body_bytes = MAX_SUBMISSION_BYTES

    @extend_schema(
        request=EnvelopeSubmissionSerializer,
        responses={
            201: SubmittedRequestSerializer,
            400: OpenApiResponse(description='A field is invalid: {"error": "<field>: <what is wrong>"}'),
            401: UNAUTHORIZED,
            404: OpenApiResponse(description="The key's channel is not this channel"),
            413: OpenApiResponse(description=f"Body over {MAX_SUBMISSION_BYTES // 1024} KiB"),
        },
        tags=TAGS,
        summary="Submit a request for people to decide (an envelope)",
    )
    def post(self, request, channel_id):
        channel = self.channel
        if str(channel.pk) != str(channel_id).lower():
            raise APIError(404, "channel not found")
        raw = request._request.body.decode("utf-8", "replace")
        approval_request = submit_request(channel, request.data, raw)
        envelope = approval_request.envelope
        return Response(
            {
                "request_id": str(approval_request.pk),
                "status": approval_request.status,
                "created_at": rfc3339_isoformat(envelope.created_at),
                "expires_at": rfc3339_isoformat(approval_request.expires_at),
            },
            status=201,
        )


class RequestDetailView(ChannelView):
    @extend_schema(
        responses={200: RequestDetailSerializer, 401: UNAUTHORIZED, 404: OpenApiResponse(description="Not found")},
        tags=TAGS,
        summary="A request's status, decision, open change request and votes",
    )
    def get(self, request, request_id):
        found = self.channel_request(request_id)
        return Response(
            {
                "request_id": str(found.pk),
                "status": found.status,
                "type": found.type,
                "title": found.title,
                "created_at": rfc3339_isoformat(found.envelope.created_at),
                "expires_at": rfc3339_isoformat(found.expires_at),
                "decision": decision_payload(found) if found.status in FINAL_REQUEST_STATUSES else None,
                "tweak": current_tweak_event(found),
                "approvals": [
                    {
                        "person_id": str(vote.person_id),
                        "approve": vote.approve,
                        "step": vote.step,
                        "at": rfc3339_isoformat(vote.at),
                    }
                    for vote in found.approvals.all()
                ],
            }
        )


class RequestWaitView(ChannelView):
    # GET only: under the ASGI server GET is answered before Django (envelopes.requests.longpoll); a
    # HEAD reaching this sync view would hold a thread for the whole wait.
    http_method_names = ["get", "options"]

    @extend_schema(
        parameters=[
            OpenApiParameter(
                "timeout",
                OpenApiTypes.NUMBER,
                description=f"Seconds to wait, capped at {MAX_LONG_POLL_SECONDS} (default: the request's "
                "long_poll_timeout_seconds).",
            )
        ],
        responses={
            200: OpenApiResponse(
                WaitAnswerSerializer, description="The decision, or a tweak_requested event while one is open"
            ),
            400: OpenApiResponse(description="timeout is not a number of seconds"),
            401: UNAUTHORIZED,
            404: OpenApiResponse(description="Not found"),
            408: OpenApiResponse(WaitTimeoutSerializer, description="No decision within the timeout"),
        },
        tags=TAGS,
        summary="Long-poll for the decision",
    )
    def get(self, request, request_id):
        try:
            timeout = parse_wait_timeout(request.query_params.get("timeout"))
        except InvalidTimeout as exc:
            raise APIError(400, str(exc)) from None
        waiter = Waiter(str(request_id))
        status, body = async_to_sync(waiter.answer)(direct_lookup, timeout=timeout, channel_id=self.channel.pk)
        return Response(body, status=status)
