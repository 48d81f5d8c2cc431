"""Who is using the admin console, and in which organization.

Every console page (control plane, inbox, channels, webhook deliveries) asks the same two
questions of the signed-in person; the answers are written once here.
"""

from django.contrib import admin

from governance.choices import Role
from governance.models import Organization
from governance.services.people import default_organization, person_roles

# Who may open the console's organization-scoped pages, and who may change through them.
CONSOLE_ROLES = frozenset({Role.PLATFORM_VIEWER, Role.PLATFORM_ADMIN, Role.GOVERNANCE_APPROVER})
APPLY_ROLES = frozenset({Role.PLATFORM_ADMIN, Role.PLATFORM_OPERATOR})


def console_roles(request) -> frozenset[str]:
    """The signed-in person's roles (cached per request); none for anyone else."""
    cached = getattr(request, "_console_roles", None)
    if cached is None:
        user = request.user
        cached = person_roles(user) if user.is_authenticated and user.is_active else frozenset()
        request._console_roles = cached
    return cached


def console_organization(request) -> Organization | None:
    """The organization the console acts in: the person's, or for a superuser without one
    the default organization (as the API does)."""
    user = request.user
    if getattr(user, "organization_id", None):
        return user.organization
    if user.is_superuser:
        return default_organization()
    return None


def has_any_role(request, roles) -> bool:
    return bool(console_roles(request) & set(roles))


class OrganizationScopedAdmin(admin.ModelAdmin):
    """Read-only pages of one organization's rows, for the console's roles (a superuser sees
    every organization). The control plane's, the entitlements' and the installer's pages
    build on it."""

    actions = None
    list_per_page = 50

    def _may_open(self, request) -> bool:
        user = request.user
        if not (user.is_active and user.is_staff):
            return False
        if not user.is_superuser and not user.organization_id:
            return False
        return has_any_role(request, CONSOLE_ROLES)

    def may_apply(self, request) -> bool:
        """The console's writers: platform operators and admins."""
        return self._may_open(request) and has_any_role(request, APPLY_ROLES)

    def has_module_permission(self, request):
        return self._may_open(request)

    def has_view_permission(self, request, obj=None):
        return self._may_open(request)

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    def get_queryset(self, request):
        queryset = super().get_queryset(request)
        if request.user.is_superuser:
            return queryset
        organization = console_organization(request)
        return queryset.filter(organization=organization) if organization else queryset.none()
