"""``/v1/approvals``: operators list, review, approve and deny held actions; an agent polls its
own. Approving goes through the core's decision path (as the inbox's button does) and answers
the execution of the stored plan."""

from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework.response import Response

from controlplane.api.gate.base import GateView, OperatorView
from envelopes.gate import approvals
from envelopes.gate.api import answers
from envelopes.models import GateApproval, GateApprovalState
from envelopes.services.decide import Actor
from governance.api.authentication import LeaseAuthentication, lease_of, operator_of
from governance.api.permissions import credential_of
from governance.errors import GateError

DEFAULT_LIST = 50
MAX_LIST = 200
STATES = {s.value for s in GateApprovalState}


def _organization(request):
    credential = credential_of(request)
    return credential.organization_id if credential is not None else None


def _actor(request) -> Actor:
    """The deciding operator, as the core's decision path names its actors, with the roles of
    the credential presented (a token may carry fewer than its person holds)."""
    credential = credential_of(request)
    roles = frozenset(credential.roles) if credential is not None else frozenset()
    user = request.user
    if getattr(user, "is_authenticated", False):
        return Actor.of_person(user, roles=roles)
    operator = operator_of(request)
    if operator is not None:
        return Actor("operator", operator.name, roles=roles)
    return Actor("user", credential.subject_id if credential else "operator", roles=roles)


class ApprovalListView(OperatorView):
    @extend_schema(
        summary="List held actions (newest first)",
        operation_id="v1_approvals_list",
        parameters=[
            OpenApiParameter("status", str, description="pending, claimed, approved, denied, expired, failed"),
            OpenApiParameter("limit", int, description=f"Default {DEFAULT_LIST}, at most {MAX_LIST}"),
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
            rows = _in_state(rows, status)
        try:
            limit = max(1, min(MAX_LIST, int(request.query_params.get("limit", DEFAULT_LIST))))
        except ValueError:
            raise GateError(400, "invalid_request", reason="limit must be an integer") from None
        items = [answers.summary(a) for a in rows.order_by("-created_at", "-approval_id")[:limit]]
        return Response({"approvals": items, "count": len(items)})


def _in_state(rows, status: str):
    """Held actions whose state (as answered: pending past its expiry is expired) is ``status``."""
    now = timezone.now()
    pending = {"state": GateApprovalState.PENDING}
    if status == GateApprovalState.PENDING:
        return rows.filter(**pending, expires_at__gt=now)
    if status == GateApprovalState.EXPIRED:
        return rows.filter(state=GateApprovalState.EXPIRED) | rows.filter(**pending, expires_at__lte=now)
    return rows.filter(state=status)


class ApprovalDetailView(OperatorView):
    @extend_schema(summary="A held action's full plan review", tags=["gate"], responses={200: OpenApiTypes.OBJECT})
    def get(self, request, approval_id: str):
        return Response(answers.detail(approvals.find(approval_id, _organization(request))))


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
        domain, path = approvals.checked_lessons(
            request.query_params.get("learn_domain", ""), request.query_params.get("learn_path", "")
        )
        operator = operator_of(request)
        detail = {
            "learn_domain": domain,
            "learn_path": path,
            "operator_binding": operator.jkt if operator is not None else "",
        }
        approval = approvals.operator_decide(
            _organization(request), approval_id, _actor(request), "approve", detail=detail
        )
        return Response(answers.executed(approval))


class DenyView(OperatorView):
    @extend_schema(
        summary="Deny a held action",
        request={"application/json": {"type": "object", "properties": {"reason": {"type": "string"}}}},
        tags=["gate"],
        responses={200: OpenApiTypes.OBJECT},
    )
    def post(self, request, approval_id: str):
        data = request.data if isinstance(request.data, dict) else {}
        reason = data.get("reason") or ""
        if not isinstance(reason, str):
            raise GateError(400, "invalid_request", reason="reason must be a string")
        approval = approvals.operator_decide(
            _organization(request), approval_id, _actor(request), "deny", comment=reason
        )
        return Response(answers.denied(approval))


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
        return Response(answers.poll(approval))
