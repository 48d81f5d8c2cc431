from django.urls import path

from envelopes.evaluation.api.evidence import (
    AuditEventSearchView,
    EnvelopeAuditEventsView,
    EnvelopeIntegrityView,
    EnvelopePacketView,
)

urlpatterns = [
    path("evidence/audit-events", AuditEventSearchView.as_view(), name="evidence-audit-events"),
    path(
        "evidence/envelopes/<str:envelope_id>/audit-events",
        EnvelopeAuditEventsView.as_view(),
        name="evidence-envelope-audit-events",
    ),
    path("evidence/envelopes/<str:envelope_id>/integrity", EnvelopeIntegrityView.as_view(), name="evidence-integrity"),
    path("evidence/envelopes/<str:envelope_id>/packet", EnvelopePacketView.as_view(), name="evidence-packet"),
]
