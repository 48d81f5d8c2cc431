from django.urls import path

from evidence.api.controlplane_audit import ControlPlaneAuditView

urlpatterns = [
    path("controlplane/audit", ControlPlaneAuditView.as_view(), name="controlplane-audit"),
]
