"""What every GBX endpoint shares: its error body ``{"error": code, "message": ...}`` with
GBX's status codes (docs/entitlements.md "Status codes"), its callers (an OIDC ID token, or
a Mandate person's bearer token), and the holder they act as."""

from rest_framework import exceptions
from rest_framework.settings import api_settings
from rest_framework.views import APIView

from entitlements.services.holders import Holder, principal_value
from governance.api.authentication import OIDCAuthentication, oidc_identity_of
from governance.api.errors import APIError, flatten_validation
from governance.api.permissions import credential_of
from governance.errors import (
    Conflict,
    DomainError,
    Exhausted,
    Gone,
    Invalid,
    NotFound,
    OutOfOrder,
    Refused,
    Unavailable,
)
from governance.models import Organization
from governance.services.oidc import trusted_issuers
from governance.services.people import default_organization

# Domain error → GBX status, and the code when the error carries none.
STATUS = (
    (Exhausted, 402, "entitlement_exhausted"),
    (OutOfOrder, 422, "out_of_order"),
    (Conflict, 409, "conflict"),
    (NotFound, 404, "not_found"),
    (Gone, 410, "gone"),
    (Unavailable, 503, "unavailable"),
    (Invalid, 400, "invalid_request"),
)
# Refusals whose code says the caller is not authenticated (401) rather than not allowed (403).
UNAUTHENTICATED_CODES = frozenset({"missing_admin_token"})


def gbx_error(exc: DomainError) -> APIError:
    code = getattr(exc, "code", None) or exc.extra.get("code")
    extra = {k: v for k, v in exc.extra.items() if k != "code"}
    if isinstance(exc, Refused):
        status = 401 if code in UNAUTHENTICATED_CODES else 403
        return APIError(status, code or "forbidden", message=exc.message, **extra)
    for kind, status, default in STATUS:
        if isinstance(exc, kind):
            return APIError(status, code or default, message=exc.message, **extra)
    return APIError(400, code or "invalid_request", message=exc.message, **extra)


class GBXView(APIView):
    """A GBX endpoint: its callers and its error words."""

    # An ID token first, then the API's usual credentials (a person's mdt_ token, an agent
    # channel's mdc_ key, a console session).
    authentication_classes = [OIDCAuthentication, *api_settings.DEFAULT_AUTHENTICATION_CLASSES]

    def handle_exception(self, exc):
        if isinstance(exc, APIError) and "reason" in exc.extra and "message" not in exc.extra:
            extra = dict(exc.extra)
            renamed = APIError(exc.status_code, exc.error, message=extra.pop("reason"), **extra)
            renamed.wait = getattr(exc, "wait", None)
            exc = renamed
        elif isinstance(exc, DomainError):
            exc = gbx_error(exc)
        elif isinstance(exc, exceptions.NotAuthenticated):
            exc = APIError(401, "unauthenticated", message="an OIDC ID token or a Mandate token is required")
        elif isinstance(exc, exceptions.AuthenticationFailed):
            code = getattr(exc, "code", None) or "invalid_token"
            exc = APIError(401, code, message=str(exc.detail))
        elif isinstance(exc, exceptions.PermissionDenied):
            exc = APIError(403, "forbidden", message=str(exc.detail))
        elif isinstance(exc, exceptions.ValidationError):
            exc = APIError(400, "invalid_request", message="; ".join(flatten_validation(exc.detail)))
        elif isinstance(exc, exceptions.ParseError | exceptions.UnsupportedMediaType):
            exc = APIError(exc.status_code, "invalid_request", message=str(exc.detail))
        elif isinstance(exc, exceptions.Throttled):
            exc = APIError(429, "rate_limited", message=str(exc.detail))
        elif isinstance(exc, exceptions.MethodNotAllowed):
            exc = APIError(405, "method_not_allowed", message=str(exc.detail))
        if getattr(exc, "status_code", None) == 401:
            exc.auth_header = 'Bearer realm="mandate"'
        return super().handle_exception(exc)

    @property
    def holder(self) -> Holder:
        """Who the caller is as an entitlement holder: an ID token's principal, or a person's
        email (their username when they have none)."""
        credential = credential_of(self.request)
        if credential is None:
            raise exceptions.NotAuthenticated()
        if credential.kind == "oidc":
            return Holder(_oidc_organization(self.request), principal_value(credential.subject_id), "principal")
        organization_id = credential.organization_id or str(default_organization().pk)
        if credential.kind == "channel":
            # An agent's channel key: the agent it was registered for (the channel object is
            # on the request, put there by its authenticator), else the channel itself.
            channel = getattr(self.request._request, "mandate_channel", None)
            agent = getattr(channel, "agent", None)  # the controlplane Agent it was registered for
            agent_id = getattr(agent, "key", "") or f"channel:{credential.subject_id}"
            return Holder(organization_id, principal_value(agent_id), "agent")
        user = self.request.user
        if credential.kind not in ("token", "session") or not getattr(user, "is_authenticated", False):
            raise exceptions.PermissionDenied("this credential cannot hold entitlements")
        return Holder(organization_id, principal_value(user.email or user.username), "person")

    def body(self) -> dict:
        """The JSON object sent; 400 for anything else."""
        data = self.request.data
        if not isinstance(data, dict):
            raise Invalid("the body must be a JSON object")
        return data


def fields(data: dict, required: tuple[str, ...], optional: tuple[str, ...] = ()) -> dict:
    """``data``'s fields, exactly: 400 naming a missing or unknown one."""
    unknown = sorted(set(data) - set(required) - set(optional))
    if unknown:
        raise Invalid(f"unknown field {unknown[0]!r}", field=unknown[0])
    for name in required:
        if data.get(name) is None:
            raise Invalid("is required", field=name)
    return data


def _oidc_organization(request) -> str:
    """The organization an ID token's caller acts in: its issuer's ``organization`` (a slug),
    else the default organization."""
    identity = oidc_identity_of(request)
    trusted = trusted_issuers().get(identity.issuer) if identity is not None else None
    slug = trusted.organization if trusted is not None else None
    if slug:
        found = Organization.objects.filter(slug=slug).values_list("pk", flat=True).first()
        if found is None:
            raise Unavailable(f"the organization {slug!r} configured for this issuer does not exist")
        return str(found)
    return str(default_organization().pk)
