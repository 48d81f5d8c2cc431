from django.urls import path

from envelopes.api.evaluate import EvaluateView

urlpatterns = [
    path("evaluate", EvaluateView.as_view(), name="evaluate"),
]
