"""Who may call what. Views name roles; the rule that checks them lives here once."""

from django.urls import reverse
from rest_framework import exceptions, permissions

from governance.api.authentication import Credential
from governance.api.errors import APIError


class Forbidden(exceptions.PermissionDenied):
    def __init__(self, required_permission: str | None = None, detail: str = "forbidden"):
        super().__init__(detail)
        self.required_permission = required_permission


def credential_of(request) -> Credential | None:
    auth = getattr(request, "auth", None)
    return auth if isinstance(auth, Credential) else None


def password_change_required() -> APIError:
    """What a held-back session is told, with where to change the password: the page (people)
    and the JSON endpoint (scripts). The middleware answers pages' and API calls' sessions
    with it too (governance.middleware.PasswordChangeRequiredMiddleware)."""
    return APIError(
        403,
        "password change required",
        change_password_url=reverse("account_change_password"),
        change_password_api=reverse("auth-change-password"),
    )


class IsAuthenticatedPrincipal(permissions.BasePermission):
    """Any authenticated credential; the default for every API view.

    A session of a person who must change their password (the bootstrap admin) may only
    call views marked ``allowed_before_password_change``. Bearer tokens are unaffected.
    """

    def has_permission(self, request, view):
        credential = credential_of(request)
        if credential is None:
            raise exceptions.NotAuthenticated()
        if (
            credential.kind == "session"
            and getattr(request.user, "must_change_password", False)
            and not getattr(view, "allowed_before_password_change", False)
        ):
            raise password_change_required()
        return True


class HasRole(IsAuthenticatedPrincipal):
    """Requires one of ``view.required_roles`` (a tuple, or a dict keyed by HTTP method).

    ``view.required_permission`` names the permission in the 403 body
    (``{"error": "forbidden", "required_permission": ...}``).
    """

    def has_permission(self, request, view):
        super().has_permission(request, view)
        required = getattr(view, "required_roles", ())
        if isinstance(required, dict):
            required = required.get(request.method, required.get("*", ()))
        if not required or credential_of(request).has_any_role(*required):
            return True
        raise Forbidden(getattr(view, "required_permission", None) or " or ".join(required))
