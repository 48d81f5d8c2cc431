from rest_framework.views import APIView

from governance.api.permissions import HasRole
from governance.api.tenancy import request_organization
from governance.choices import Role

VIEW_ROLES = (Role.PLATFORM_VIEWER,)  # admin and operator imply viewer
APPLY_ROLES = (Role.PLATFORM_ADMIN, Role.PLATFORM_OPERATOR)
LIFECYCLE_ROLES = (Role.PLATFORM_ADMIN, Role.GOVERNANCE_APPROVER)


class ControlPlaneView(APIView):
    """Base for control-plane endpoints: authenticated, organization-scoped, viewer by default."""

    permission_classes = [HasRole]
    required_roles = VIEW_ROLES
    required_permission = "controlplane:read"

    @property
    def organization(self):
        return request_organization(self.request)
