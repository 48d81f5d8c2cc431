from django.urls import include, path

from evidence.api.views import LedgerVerifyView

urlpatterns = [
    path("audit/verify", LedgerVerifyView.as_view(), name="audit-verify"),
    path("", include("evidence.api.controlplane_audit_urls")),
    path("", include("evidence.api.admin_audit_urls")),
]
