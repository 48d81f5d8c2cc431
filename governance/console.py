"""Who is using the admin console, and in which organization.

Every console page (control plane, inbox, channels, webhook deliveries) asks the same two
questions of the signed-in person; the answers are written once here.
"""

from governance.models import Organization
from governance.services.people import default_organization, person_roles


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
