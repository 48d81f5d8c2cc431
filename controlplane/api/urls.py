from django.urls import include, path

urlpatterns = [
    path("", include("controlplane.api.bundle_urls")),
    path("", include("controlplane.api.lifecycle_urls")),
    path("", include("controlplane.api.introspection_urls")),
    path("", include("controlplane.api.gate.urls")),
]
