from django.urls import path

from controlplane.api.bundles import ApplyView, PlanView

urlpatterns = [
    path("controlplane/plan", PlanView.as_view(), name="controlplane-plan"),
    path("controlplane/apply", ApplyView.as_view(), name="controlplane-apply"),
]
