"""Who is signed in to the console: the one place the inbox reads a request's person,
organization and roles (``controlplane.admin_views`` keeps them per request)."""

from controlplane.admin_views import console_organization, console_roles
from envelopes.inbox.permissions import Viewer


def viewer_of(request) -> Viewer:
    return Viewer(request.user, console_organization(request), console_roles(request))
