"""``/v1/approvals``: operators list, review, approve and deny held actions; an agent polls its
own. Approving goes through the core's decision path (as the inbox's button does) and answers
the execution of the stored plan."""

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework.response import Response

from controlplane.api.gate.base import GateView, OperatorView
from envelopes.gate import approvals
from envelopes.models import GateApproval, GateApprovalState
from envelopes.services.decide import Actor
from governance.api.authentication import LeaseAuthentication, lease_of, operator_of
from governance.api.permissions import credential_of
from governance.choices import Role
from governance.errors import GateError

MAX_LIST = 200
STATES = {s.value for s in GateApprovalState}


def _organization(request):
    credential = credential_of(request)
    return credential.organization_id if credential is not None else None


def _actor(request) -> Actor:
    """The approving operator, as the core's decision path names its actors."""
    operator = operator_of(request)
    user = request.user
    if getattr(user, "is_authenticated", False):
        return Actor.of_person(user)
    credential = credential_of(request)
    name = operator.name if operator is not None else (credential.subject_id if credential else "operator")
    return Actor("user", name, roles=frozenset({Role.PLATFORM_OPERATOR}))


class ApprovalListView(OperatorView):
    @extend_schema(
        summary="List held actions (newest first)",
        operation_id="v1_approvals_list",
        parameters=[
            OpenApiParameter("status", str, description="pending, claimed, approved, denied, expired, failed"),
            OpenApiParameter("limit", int, description=f"Default 50, at most {MAX_LIST}"),
        ],
        tags=["gate"],
        responses={200: OpenApiTypes.OBJECT},
    )
    def get(self, request):
        rows = GateApproval.objects.select_related("envelope").filter(envelope__organization_id=_organization(request))
        status = request.query_params.get("status")
        if status:
            if status not in STATES:
                raise GateError(400, "invalid_request", reason=f"status must be one of {', '.join(sorted(STATES))}")
            rows = rows.filter(state=status)
        try:
            limit = max(1, min(MAX_LIST, int(request.query_params.get("limit", 50))))
        except ValueError:
            raise GateError(400, "invalid_request", reason="limit must be an integer") from None
        items = [approvals.summary(a) for a in rows.order_by("-created_at")[:limit]]
        return Response({"approvals": items, "count": len(items)})


class ApprovalDetailView(OperatorView):
    @extend_schema(summary="A held action's full plan review", tags=["gate"], responses={200: OpenApiTypes.OBJECT})
    def get(self, request, approval_id: str):
        return Response(approvals.detail(approvals.find(approval_id, _organization(request))))


class ApproveView(OperatorView):
    @extend_schema(
        summary="Approve a held action and execute its stored plan",
        parameters=[
            OpenApiParameter("learn_domain", str, description="Learn this domain for the action, on success"),
            OpenApiParameter("learn_path", str, description="Learn this path for the action, on success"),
        ],
        request=None,
        tags=["gate"],
        responses={200: OpenApiTypes.OBJECT},
    )
    def post(self, request, approval_id: str):
        operator = operator_of(request)
        detail = {
            "learn_domain": request.query_params.get("learn_domain", "")[:255],
            "learn_path": request.query_params.get("learn_path", "")[:1024],
            "operator_binding": operator.jkt if operator is not None else "",
        }
        approval = approvals.operator_decide(
            _organization(request), approval_id, _actor(request), "approve", detail=detail
        )
        status, body = approvals.execution_answer(approval)
        return Response(body, status=status)


class DenyView(OperatorView):
    @extend_schema(
        summary="Deny a held action",
        request={"application/json": {"type": "object"}},
        tags=["gate"],
        responses={200: OpenApiTypes.OBJECT},
    )
    def post(self, request, approval_id: str):
        data = request.data if isinstance(request.data, dict) else {}
        reason = data.get("reason") or ""
        if not isinstance(reason, str):
            raise GateError(400, "invalid_request", reason="reason must be a string")
        actor = _actor(request)
        approval = approvals.operator_decide(_organization(request), approval_id, actor, "deny", comment=reason)
        return Response(
            {
                "decision": "deny",
                "trace_id": approval.trace_id,
                "action_id": approval.action_id,
                "approval_id": approval.approval_id,
                "denied_by": approval.decided_by,
                "deny_reason": approval.deny_reason,
            }
        )


class PollView(GateView):
    """An agent polls its own held action (same lease session), by lease and DPoP."""

    authentication_classes = [LeaseAuthentication]
    permission_classes = []

    @extend_schema(
        summary="Poll a held action's state (the agent's own session)",
        tags=["gate"],
        responses={200: OpenApiTypes.OBJECT},
    )
    def get(self, request, approval_id: str):
        lease = lease_of(request)
        approval = approvals.find(approval_id, lease.organization_id)
        if approval.session_id != lease.session_id:
            raise GateError(403, "session_mismatch")
        return Response(poll_answer(approval))


FAILURE_CODES = ("plan_tampered", "revoked", "action_not_found", "budget_exhausted")


def poll_answer(approval: GateApproval) -> dict:
    """``state`` as the reference names it; ``status`` and the rest as LatchGate's SDKs read them:
    a claimed approval is still ``pending`` to them (their poll loops stop on anything else), an
    approved one names the receipt of the operator's execution, a denied or failed one why."""
    state = approval.state
    body = {"approval_id": approval.approval_id, "state": state, "status": state}
    if state in (GateApprovalState.PENDING, GateApprovalState.CLAIMED):
        body.update(status="pending", retry_after_seconds=2 if state == GateApprovalState.PENDING else 1)
    elif state == GateApprovalState.APPROVED and approval.receipt_id:
        body["receipt_id"] = approval.receipt_id
    elif state == GateApprovalState.DENIED:
        body["reason"] = approval.deny_reason or "no reason provided"
    elif state == GateApprovalState.FAILED:
        code = approval.failure.split(":", 1)[0]
        body["reason"] = code if code in FAILURE_CODES else "execution_failed"
    return body
