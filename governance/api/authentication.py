"""How API callers prove who they are.

Every authenticator returns ``(user, Credential)``. Views and permissions only look at
the ``Credential`` (its kind, roles and organization), so later credential kinds —
channel keys, DPoP leases, OIDC ID tokens, wallet sessions, admin header tokens — are
new classes in ``REST_FRAMEWORK["DEFAULT_AUTHENTICATION_CLASSES"]``, not view changes.
"""

import logging
from dataclasses import dataclass, field

from django.conf import settings
from django.contrib.auth.models import AnonymousUser
from rest_framework import authentication, exceptions

from governance.choices import Role, expand_roles
from governance.services.people import person_roles
from governance.services.tokens import authenticate_token

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Credential:
    kind: str  # "token", "session", "open", ...
    subject_id: str  # the principal's id in this credential's namespace
    roles: frozenset[str] = field(default_factory=frozenset)
    organization_id: str | None = None
    credential_id: str | None = None

    def has_any_role(self, *roles: str) -> bool:
        return bool(self.roles & set(roles))


class BearerTokenAuthentication(authentication.BaseAuthentication):
    """``Authorization: Bearer mdt_...`` — Mandate's own API tokens."""

    keyword = "Bearer"

    def authenticate(self, request):
        header = authentication.get_authorization_header(request).decode("latin-1")
        if not header:
            return None
        scheme, _, secret = header.partition(" ")
        if scheme.lower() != "bearer":
            return None
        secret = secret.strip()
        if not secret.startswith("mdt_"):
            return None  # another credential kind's bearer; let its authenticator decide
        token = authenticate_token(secret)
        if token is None:
            raise exceptions.AuthenticationFailed("invalid or expired token")
        person = token.principal
        credential = Credential(
            kind="token",
            subject_id=str(person.pk),
            roles=expand_roles(token.roles),
            organization_id=str(person.organization_id) if person.organization_id else None,
            credential_id=str(token.pk),
        )
        return person, credential

    def authenticate_header(self, request):
        return 'Bearer realm="mandate"'


class SessionAuthentication(authentication.SessionAuthentication):
    """A signed-in person in the browser (CSRF enforced), with their assigned roles."""

    def authenticate(self, request):
        result = super().authenticate(request)
        if result is None:
            return None
        person = result[0]
        return person, Credential(
            kind="session",
            subject_id=str(person.pk),
            roles=person_roles(person),
            organization_id=str(person.organization_id) if person.organization_id else None,
        )

    def enforce_csrf(self, request):
        # Say what failed: a bare "forbidden" leaves script authors guessing.
        try:
            super().enforce_csrf(request)
        except exceptions.PermissionDenied as exc:
            from governance.api.errors import APIError

            raise APIError(403, str(exc.detail)) from exc


class OpenModeAuthentication(authentication.BaseAuthentication):
    """MANDATE_AUTH_MODE=open: unauthenticated calls act as a local admin. Experiments only."""

    def authenticate(self, request):
        if settings.MANDATE_AUTH_MODE != "open":
            return None
        if authentication.get_authorization_header(request):
            return None
        return AnonymousUser(), Credential(kind="open", subject_id="anonymous", roles=frozenset(Role.values))
