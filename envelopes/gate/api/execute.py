"""``POST /v1/actions/{action_id}/execute``: the pipeline (``envelopes/gate/pipeline.py``) as a
hot route — answered in front of Django for plain requests (``governance/asgi.py``), and by
this Django view, driving the same steps, for everything else."""

import logging

from django.http import JsonResponse
from django.views.decorators.csrf import csrf_exempt
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework.decorators import api_view, authentication_classes, permission_classes

from envelopes.gate import metrics
from envelopes.gate.pipeline import execute
from envelopes.gate.steps.recording import as_refusal, record_evidence
from governance.api.errors import gate_api_error
from governance.hotpath import HotRequest, HotRoute, drive

logger = logging.getLogger("mandate.gate")

TRANSPORT_LIMIT = 1024 * 1024  # the reference's 1 MB; beyond: 413


def gate_answer(exc: Exception) -> tuple[int, dict]:
    """The wire form of anything the pipeline raised: ``{"error": code}`` (plus a sanitized
    ``deny_reason`` or ``reason`` below 500); 5xx carry only the code, details go to the log."""
    refusal = as_refusal(exc)
    if refusal is not exc:
        if refusal.code == "store_unavailable":
            logger.warning("gate: database unavailable", extra={"error": str(exc)})
        else:
            logger.error("gate: internal error", exc_info=exc)
    rendered = gate_api_error(refusal)
    return refusal.status, {"error": rendered.error, **rendered.extra}


def measured(request: HotRequest):
    """The pipeline, counted: executions in flight while it runs, and its answer or failure
    in the metrics (``envelopes/gate/metrics.py``). Steps and failures pass through untouched."""
    metrics.execution_started()
    try:
        status, body = yield from execute(request)
    except Exception as exc:
        refusal = as_refusal(exc)
        action_id = metrics.action_label(request.params.get("action_id", ""), refusal.code)
        metrics.failed(action_id, refusal.status, refusal.code)
        raise
    else:
        metrics.answered(request.params.get("action_id", ""), status, body)
        return status, body
    finally:
        metrics.execution_ended()


EXECUTE = HotRoute(
    path="/v1/actions/{action_id}/execute",
    method="POST",
    service=measured,
    errors=gate_answer,
    record=record_evidence,  # the calls' evidence, group-committed
    max_body_bytes=TRANSPORT_LIMIT,
)


@extend_schema(
    summary="Execute an action through the gate",
    description="Lease + DPoP (`Authorization: DPoP <lease>`, `DPoP: <proof>` bound to POST and "
    "PUBLIC_BASE_URL + this path). The body is the action's request (its JSON Schema: "
    "`GET /v1/actions/{action_id}/schema/request`). docs/gate.md.",
    request={"application/json": {"type": "object"}},
    responses={
        200: OpenApiResponse(description="Executed: trace_id, action_id, grant_id, receipt_id, output, verification"),
        202: OpenApiResponse(description="Held for a person: decision pending_approval, approval_id"),
        401: OpenApiResponse(
            description="missing_auth_header, invalid_lease, lease_expired, invalid_dpop, replay_detected"
        ),
        403: OpenApiResponse(description="policy_denied, action_not_registered, action_digest_mismatch, budget_*"),
        404: OpenApiResponse(description="action_not_found"),
        413: OpenApiResponse(description="The body is too large"),
        422: OpenApiResponse(description="schema_violation"),
        429: OpenApiResponse(description="rate_limit_exceeded"),
        502: OpenApiResponse(description="action_execution_failed"),
        503: OpenApiResponse(description="draining, replay_cache_unavailable"),
    },
    tags=["gate"],
)
@csrf_exempt
@api_view(["POST"])
@authentication_classes([])
@permission_classes([])
def execute_view(request, action_id: str):
    """Django's answer: the same pipeline, driven synchronously (``governance.hotpath.drive``)."""
    raw = request._request.body if len(request._request.body) <= TRANSPORT_LIMIT else None
    if raw is None:
        return JsonResponse({"error": "request_too_large"}, status=413)
    headers = {name.lower(): value for name, value in request._request.headers.items()}
    status, body = drive(EXECUTE, HotRequest("POST", request._request.path, {"action_id": action_id}, headers, raw))
    return JsonResponse(body, status=status)
