from django.urls import path

from envelopes.evaluation.api.reviews import ReviewView

urlpatterns = [
    path("reviews", ReviewView.as_view(), name="reviews"),
]
