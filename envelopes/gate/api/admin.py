"""Operator controls: ``/v1/admin/status``, ``drain``, ``revoke-all``, ``epoch`` and ``/metrics``.
Drain and the revocation epoch are the gate's shared state (``governance.gate.state``): every
process of the deployment sees them within a second."""

import time

from django.conf import settings
from django.http import HttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema
from rest_framework.response import Response

from controlplane.api.gate.base import OperatorView
from controlplane.gate.registry import registry
from envelopes.gate.metrics import exposition
from envelopes.models import Delivery, GateApproval, GateApprovalState
from governance.gate.state import advance_epoch, gate_state, start_drain
from governance.health import redis_ready

STARTED = time.monotonic()
VERSION = "0.1.0"


class StatusView(OperatorView):
    @extend_schema(
        summary="The gate's status (not audited: polled by monitoring)",
        tags=["gate"],
        responses={200: OpenApiTypes.OBJECT},
    )
    def get(self, request):
        state = gate_state(max_age=0)
        redis = redis_ready(settings.REDIS_URL) if settings.REDIS_URL else None
        degraded = redis is False
        return Response(
            {
                "status": "draining" if state.draining else ("degraded" if degraded else "ok"),
                "version": VERSION,
                "uptime_seconds": int(time.monotonic() - STARTED),
                "actions_registered": len(registry()),
                "pending_approvals": GateApproval.objects.filter(state=GateApprovalState.PENDING).count(),
                "revocation_epoch": state.epoch,
                "draining": state.draining,
                "in_flight_executions": 0,
                "dependencies": {"redis": redis, "policy": True, "database": True},
                "webhooks": {
                    "active": True,
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
        return Response({"draining": state.draining, "already_draining": already, "in_flight_executions": 0})


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
        return HttpResponse(exposition(), content_type="application/openmetrics-text; version=1.0.0; charset=utf-8")
