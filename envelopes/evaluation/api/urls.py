from django.urls import include, path

from envelopes.evaluation.api.evaluate import EvaluateView

urlpatterns = [
    path("evaluate", EvaluateView.as_view(), name="evaluate"),
    path("", include("envelopes.evaluation.api.reads_urls")),
    path("", include("envelopes.evaluation.api.reviews_urls")),
    path("", include("envelopes.evaluation.api.evidence_urls")),
]
