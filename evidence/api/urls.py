from django.urls import include, path

from evidence.api.gate import GateAuditEventsView, ReceiptKeysView, ReceiptView
from evidence.api.views import LedgerVerifyView

urlpatterns = [
    path("audit/verify", LedgerVerifyView.as_view(), name="audit-verify"),
    path("audit/events", GateAuditEventsView.as_view(), name="gate-audit-events"),
    path("receipt-keys", ReceiptKeysView.as_view(), name="receipt-keys"),
    path("receipts/<str:receipt_id>", ReceiptView.as_view(), name="receipt"),
    path("", include("evidence.api.controlplane_audit_urls")),
    path("", include("evidence.api.admin_audit_urls")),
]
