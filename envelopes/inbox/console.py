"""Who is signed in to the console: the one place the inbox reads a request's person,
organization and roles (``controlplane.admin_views`` keeps them per request)."""

from envelopes.inbox.permissions import Viewer
from governance.console import console_organization, console_roles


def viewer_of(request) -> Viewer:
    return Viewer(request.user, console_organization(request), console_roles(request))
