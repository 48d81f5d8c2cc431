from django.urls import path

from evidence.api.views import LedgerVerifyView

urlpatterns = [
    path("audit/verify", LedgerVerifyView.as_view(), name="audit-verify"),
]
