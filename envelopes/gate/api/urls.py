from django.urls import path

from envelopes.gate.api import admin, approvals
from envelopes.gate.api.execute import execute_view

urlpatterns = [
    path("v1/actions/<str:action_id>/execute", execute_view, name="gate-execute"),
    path("v1/approvals", approvals.ApprovalListView.as_view(), name="gate-approvals"),
    path("v1/approvals/<str:approval_id>", approvals.ApprovalDetailView.as_view(), name="gate-approval"),
    path("v1/approvals/<str:approval_id>/approve", approvals.ApproveView.as_view(), name="gate-approve"),
    path("v1/approvals/<str:approval_id>/deny", approvals.DenyView.as_view(), name="gate-deny"),
    path("v1/approvals/<str:approval_id>/poll", approvals.PollView.as_view(), name="gate-poll"),
    path("v1/admin/status", admin.StatusView.as_view(), name="gate-status"),
    path("v1/admin/drain", admin.DrainView.as_view(), name="gate-drain"),
    path("v1/admin/revoke-all", admin.RevokeAllView.as_view(), name="gate-revoke-all"),
    path("v1/admin/epoch", admin.EpochView.as_view(), name="gate-epoch"),
    path("metrics", admin.MetricsView.as_view(), name="gate-metrics"),
]
