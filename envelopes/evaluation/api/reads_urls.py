"""Envelope read routes (``/v1/...``)."""

from django.urls import path, re_path

from envelopes.evaluation.api import reads as views

urlpatterns = [
    path("envelopes", views.EnvelopeListView.as_view(), name="envelope-list"),
    path("envelopes/<str:id>", views.EnvelopeDetailView.as_view(), name="envelope-detail"),
    path("escalations", views.EscalationListView.as_view(), name="escalation-list"),
    # Any request id reaches the view (empty, with '/', '\\' or control characters) so that
    # an invalid one is MIDAS's 400, not a routing 404.
    re_path(
        r"^decisions/request/(?P<request_id>[\s\S]*)$",
        views.DecisionByRequestView.as_view(),
        name="decision-by-request",
    ),
]
