"""MIDAS's read-only introspection and structural routes (``/v1/...``)."""

from django.urls import path

from controlplane.api import introspection as views

urlpatterns = [
    path("surfaces", views.SurfaceListView.as_view(), name="surface-list"),
    path("surfaces/<str:id>", views.SurfaceDetailView.as_view(), name="surface-detail"),
    path("surfaces/<str:id>/versions", views.SurfaceVersionsView.as_view(), name="surface-versions"),
    path("surfaces/<str:id>/recovery", views.SurfaceRecoveryView.as_view(), name="surface-recovery"),
    path("profiles", views.ProfileListView.as_view(), name="profile-list"),
    path("profiles/<str:id>", views.ProfileDetailView.as_view(), name="profile-detail"),
    path("profiles/<str:id>/versions", views.ProfileVersionsView.as_view(), name="profile-versions"),
    path("profiles/<str:id>/recovery", views.ProfileRecoveryView.as_view(), name="profile-recovery"),
    path("agents", views.AgentListView.as_view(), name="agent-list"),
    path("agents/<str:id>", views.AgentDetailView.as_view(), name="agent-detail"),
    path("grants", views.GrantListView.as_view(), name="grant-list"),
    path("grants/<str:id>", views.GrantDetailView.as_view(), name="grant-detail"),
    path("capabilities", views.CapabilityListView.as_view(), name="capability-list"),
    path("capabilities/<str:id>", views.CapabilityDetailView.as_view(), name="capability-detail"),
    path("processes", views.ProcessListView.as_view(), name="process-list"),
    path("processes/<str:id>", views.ProcessDetailView.as_view(), name="process-detail"),
    path("processes/<str:id>/surfaces", views.ProcessSurfacesView.as_view(), name="process-surfaces"),
    path("businessservices", views.BusinessServiceListView.as_view(), name="business-service-list"),
    path("businessservices/<str:id>", views.BusinessServiceDetailView.as_view(), name="business-service-detail"),
]
