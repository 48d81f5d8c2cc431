from django.urls import include, path

from envelopes.api.evaluate import EvaluateView

urlpatterns = [
    path("evaluate", EvaluateView.as_view(), name="evaluate"),
    path("", include("envelopes.api.reads_urls")),
    path("", include("envelopes.api.reviews_urls")),
    path("", include("envelopes.api.evidence_urls")),
]
