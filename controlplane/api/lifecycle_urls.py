from django.urls import path

from controlplane.api.lifecycle import (
    GrantTransitionView,
    ProfileApproveView,
    ProfileDeprecateView,
    SurfaceApproveView,
    SurfaceDeprecateView,
)
from controlplane.services.lifecycle import GRANT_ACTIONS

urlpatterns = [
    path(
        "controlplane/surfaces/<str:surface_id>/approve",
        SurfaceApproveView.as_view(),
        name="controlplane-surface-approve",
    ),
    path(
        "controlplane/surfaces/<str:surface_id>/deprecate",
        SurfaceDeprecateView.as_view(),
        name="controlplane-surface-deprecate",
    ),
    path(
        "controlplane/profiles/<str:profile_id>/approve",
        ProfileApproveView.as_view(),
        name="controlplane-profile-approve",
    ),
    path(
        "controlplane/profiles/<str:profile_id>/deprecate",
        ProfileDeprecateView.as_view(),
        name="controlplane-profile-deprecate",
    ),
] + [
    path(
        f"controlplane/grants/<str:grant_id>/{transition}",
        GrantTransitionView.as_view(transition=transition),
        name=f"controlplane-grant-{transition}",
    )
    for transition in GRANT_ACTIONS
]
