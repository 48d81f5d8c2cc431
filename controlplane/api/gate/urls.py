from django.urls import path

from controlplane.api.gate import admin, catalogue

urlpatterns = [
    path("actions", catalogue.ActionListView.as_view(), name="gate-actions"),
    path("actions/<str:action_id>", catalogue.ActionDetailView.as_view(), name="gate-action"),
    path(
        "actions/<str:action_id>/schema/request",
        catalogue.ActionRequestSchemaView.as_view(),
        name="gate-action-request-schema",
    ),
    path("admin/policy", admin.PolicyView.as_view(), name="gate-policy"),
    # A GET on these is the principal of that name (PrincipalView.get).
    path("admin/policy/grant", admin.GrantView.as_view(), {"principal": "grant"}, name="gate-policy-grant"),
    path("admin/policy/revoke", admin.RevokeView.as_view(), {"principal": "revoke"}, name="gate-policy-revoke"),
    path(
        "admin/policy/allowlist",
        admin.AllowlistView.as_view(),
        {"principal": "allowlist"},
        name="gate-policy-allowlist",
    ),
    path("admin/policy/<str:principal>", admin.PrincipalView.as_view(), name="gate-policy-principal"),
    path("admin/domains", admin.DomainsView.as_view(), name="gate-domains"),
    path("admin/domains/clear", admin.DomainsClearView.as_view(), name="gate-domains-clear"),
    path("admin/paths", admin.PathsView.as_view(), name="gate-paths"),
    path("admin/paths/clear", admin.PathsClearView.as_view(), name="gate-paths-clear"),
    path("admin/reload", admin.ReloadView.as_view(), name="gate-reload"),
]
