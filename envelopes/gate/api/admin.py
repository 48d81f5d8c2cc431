"""Operator controls: ``/v1/admin/status``, ``drain``, ``revoke-all``, ``epoch`` and ``/metrics``.
Drain and the revocation epoch are the gate's shared state (``governance.gate.state``): every
process of the deployment sees them within a second; each change is a ``GATE_ADMIN_*`` ledger
event (``envelopes/gate/ledger.py``). In-flight executions are this process's (as LatchGate's)."""

import time
from datetime import timedelta

from django.conf import settings
from django.http import HttpResponse
from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema
from rest_framework.response import Response

from controlplane.api.gate.base import OperatorView
from controlplane.gate.policy import current_policy_version
from controlplane.gate.registry import registry
from envelopes.gate import metrics
from envelopes.models import Delivery, GateApproval, GateApprovalState
from governance.gate.state import advance_epoch, gate_state, start_drain
from governance.health import database_ready, filesystem_broker_ready, redis_ready

OPENMETRICS = "application/openmetrics-text; version=1.0.0; charset=utf-8"
STARTED = time.monotonic()
VERSION = "0.1.0"
# A plan runs at most 300 s (the manifests' timeout bound); a claim older than this, with a
# minute to record it, never got its outcome written: an unresolved intent.
UNRESOLVED_AFTER = timedelta(seconds=360)


def policy_ready() -> bool:
    """The Rego policy is compiled and its data loaded (it runs in this process)."""
    try:
        current_policy_version()
    except Exception:  # noqa: BLE001 (any failure: the policy cannot decide)
        return False
    return True


class StatusView(OperatorView):
    @extend_schema(
        summary="The gate's status (not audited: polled by monitoring)",
        tags=["gate"],
        responses={200: OpenApiTypes.OBJECT},
    )
    def get(self, request):
        state = gate_state(max_age=0)
        dependencies = {
            "redis": redis_ready(settings.REDIS_URL) if settings.REDIS_URL else None,
            "policy": policy_ready(),
            "database": database_ready(),
        }
        degraded = any(value is False for value in dependencies.values())
        claimed = GateApproval.objects.filter(state=GateApprovalState.CLAIMED)
        return Response(
            {
                "status": "draining" if state.draining else ("degraded" if degraded else "ok"),
                "version": VERSION,
                "uptime_seconds": int(time.monotonic() - STARTED),
                "actions_registered": len(registry()),
                "pending_approvals": GateApproval.objects.filter(
                    state=GateApprovalState.PENDING, expires_at__gt=timezone.now()
                ).count(),
                "revocation_epoch": state.epoch,
                "draining": state.draining,
                "in_flight_executions": metrics.in_flight(),
                "unresolved_intents": claimed.filter(decided_at__lt=timezone.now() - UNRESOLVED_AFTER).count(),
                "dependencies": dependencies,
                "webhooks": {
                    # the outbox's queue takes deliveries: the broker (Redis, or the embedded one)
                    "active": dependencies["redis"] if settings.REDIS_URL else filesystem_broker_ready(),
                    "pending_deliveries": Delivery.objects.filter(status="pending").count(),
                },
            }
        )


class DrainView(OperatorView):
    @extend_schema(
        summary="Start draining (idempotent; shared by every process)",
        request=None,
        tags=["gate"],
        responses={200: OpenApiTypes.OBJECT},
    )
    def post(self, request):
        already, state = start_drain(self.actor.name)
        return Response(
            {"draining": state.draining, "already_draining": already, "in_flight_executions": metrics.in_flight()}
        )


class RevokeAllView(OperatorView):
    @extend_schema(
        summary="Advance the revocation epoch: every earlier lease and grant is void",
        request=None,
        tags=["gate"],
        responses={200: OpenApiTypes.OBJECT},
    )
    def post(self, request):
        previous, current = advance_epoch(self.actor.name)
        return Response({"previous_epoch": previous, "current_epoch": current})


class EpochView(OperatorView):
    @extend_schema(summary="The current revocation epoch", tags=["gate"], responses={200: OpenApiTypes.OBJECT})
    def get(self, request):
        return Response({"current_epoch": gate_state(max_age=0).epoch})


class MetricsView(OperatorView):
    @extend_schema(
        summary="Prometheus text (operator auth)",
        tags=["gate"],
        responses={(200, "application/openmetrics-text"): OpenApiTypes.STR},
    )
    def get(self, request):
        return HttpResponse(metrics.exposition(), content_type=OPENMETRICS)
