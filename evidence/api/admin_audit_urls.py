from django.urls import path

from evidence.api.admin_audit import AdminAuditView

urlpatterns = [
    path("platform/admin-audit", AdminAuditView.as_view(), name="platform-admin-audit"),
]
