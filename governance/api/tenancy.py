"""Which organization an API call acts in."""

from governance.api.errors import APIError
from governance.api.permissions import credential_of
from governance.models import Organization
from governance.services.people import default_organization


def request_organization(request) -> Organization:
    """The caller's organization: the credential's, else (open mode, or a superuser with no
    organization) the default organization named by MANDATE_DEFAULT_ORGANIZATION."""
    cached = getattr(request, "_mandate_organization", None)
    if cached is not None:
        return cached
    credential = credential_of(request)
    organization = None
    if credential is not None and credential.organization_id:
        # The token lookup already loaded the person's organization: reuse it.
        loaded = getattr(request.user, "organization", None) if credential.kind in ("token", "session") else None
        if loaded is not None and str(loaded.pk) == credential.organization_id:
            organization = loaded
        else:
            organization = Organization.objects.filter(pk=credential.organization_id).first()
    elif credential is not None and (credential.kind == "open" or getattr(request.user, "is_superuser", False)):
        organization = default_organization()
    if organization is None:
        raise APIError(403, "forbidden: the credential is not bound to an organization")
    request._mandate_organization = organization
    return organization
