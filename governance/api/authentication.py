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

from governance.api.errors import APIError, gate_api_error
from governance.api.request_meta import correlation_id_of
from governance.choices import Role, expand_roles
from governance.errors import GateError
from governance.gate.auth import authenticate_lease, authenticate_operator
from governance.gate.operator_keys import is_operator_key
from governance.jwks import key_sets
from governance.services.oidc import OIDCIdentity, OIDCRejected, OIDCUnavailable, looks_like_jwt, verify_id_token
from governance.services.people import person_roles
from governance.services.tokens import authenticate_token
from governance.services.wallet_sessions import SESSION_SCHEME, authenticate_wallet_session

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


OPERATOR_KEY = "operator_key"
LEASE = "lease"
OIDC = "oidc"


def _gate_failure(exc: GateError):
    """A gate refusal raised during authentication, as the API answers it (an APIException,
    so DRF records the failed authentication and the handler renders the gate's body)."""
    return gate_api_error(exc)


class DPoPOperatorAuthentication(authentication.BaseAuthentication):
    """``Authorization: DPoP mdo_...`` + ``DPoP: <proof>`` — an operator key (docs/gate.md).

    Engages only on an operator key in the DPoP scheme, so a lease sent with DPoP headers to a
    route that takes none is ignored there, as LatchGate's SDKs expect. The principal holds
    ``platform.operator``, so views that require it accept operator keys unchanged.
    """

    def authenticate(self, request):
        header = authentication.get_authorization_header(request).decode("latin-1")
        scheme, _, secret = header.partition(" ")
        if scheme.lower() != "dpop" or not is_operator_key(secret.strip()):
            return None
        try:
            operator = authenticate_operator(request.method, request.path_info, header, request.headers.get("DPoP"))
        except GateError as exc:
            raise _gate_failure(exc) from None
        request._request.mandate_operator = operator
        return AnonymousUser(), Credential(
            kind=OPERATOR_KEY,
            subject_id=operator.name,
            roles=expand_roles([Role.PLATFORM_OPERATOR]),
            organization_id=operator.organization_id,
            credential_id=operator.key_id,
        )

    def authenticate_header(self, request):
        return 'DPoP algs="ES256"'


class LeaseAuthentication(authentication.BaseAuthentication):
    """``Authorization: DPoP <lease>`` + ``DPoP: <proof>`` — an agent's lease (docs/gate.md).

    Not a default class: views that take leases name it, last, because it always answers
    (no header is 401 ``missing_auth_header``, ``Bearer`` is 401 ``invalid_lease``); classes
    listed before it (an operator key, a bearer token) get their chance first.
    """

    def authenticate(self, request):
        header = authentication.get_authorization_header(request).decode("latin-1")
        try:
            lease = authenticate_lease(request.method, request.path_info, header, request.headers.get("DPoP"))
        except GateError as exc:
            raise _gate_failure(exc) from None
        request._request.mandate_lease = lease
        return AnonymousUser(), Credential(
            kind=LEASE, subject_id=lease.agent_id, organization_id=lease.organization_id, credential_id=lease.lease_jti
        )

    def authenticate_header(self, request):
        return 'DPoP algs="ES256"'


class OIDCAuthenticationFailed(APIError, exceptions.AuthenticationFailed):
    """401 ``{"error": code, "reason": message}`` with the ``Bearer`` challenge: an APIError for
    the body, an AuthenticationFailed so DRF records the failure and sends ``WWW-Authenticate``."""

    def __init__(self, rejected: OIDCRejected):
        super().__init__(401, str(rejected.code), reason=rejected.message)
        self.code = rejected.code
        self.detail = exceptions.ErrorDetail(rejected.message, code=str(rejected.code))


class OIDCAuthentication(authentication.BaseAuthentication):
    """``Authorization: Bearer <ID token>`` — an OpenID Connect ID token from an issuer in
    ``MANDATE_OIDC_ISSUERS`` (docs/oidc.md), as GBX's jobs send a Google identity.

    Engages only on a bearer value shaped like a JWT (two dots); Mandate's own ``mdt_`` and
    ``mdc_`` secrets are left to their authenticators. The credential carries the principal
    (the verified email, else ``sub``), no roles and no organization; ``oidc_identity_of``
    gives the whole identity. Not a default class: a trusted ID token would otherwise be a
    credential on every view that asks only for one (``/v1/leases``, ``/auth/...``), so the
    views that take ID tokens name it. A refused token is 401 ``{"error": code, "reason"}``;
    unreachable issuer keys are 503 ``jwks_unavailable`` with ``Retry-After``.
    """

    def authenticate(self, request):
        header = authentication.get_authorization_header(request).decode("latin-1")
        scheme, _, token = header.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not looks_like_jwt(token):
            return None
        try:
            identity = verify_id_token(token)
        except OIDCUnavailable as exc:
            unavailable = APIError(503, str(exc.code), reason=exc.message)
            unavailable.wait = key_sets.min_refetch
            raise unavailable from None
        except OIDCRejected as exc:
            raise OIDCAuthenticationFailed(exc) from None
        request._request.mandate_oidc = identity
        return AnonymousUser(), Credential(kind=OIDC, subject_id=identity.principal, credential_id=identity.issuer)

    def authenticate_header(self, request):
        return 'Bearer realm="mandate"'


WALLET = "wallet"


class WalletSessionAuthenticationFailed(APIError, exceptions.AuthenticationFailed):
    """401 in edut's shape, ``{"error", "code", "correlation_id"}``, with the ``Bearer`` challenge."""

    def __init__(self, request):
        code = "wallet_session_invalid"
        super().__init__(401, code, code=code, correlation_id=correlation_id_of(request))
        self.detail = exceptions.ErrorDetail("invalid, expired or revoked wallet session", code=code)


class WalletSessionAuthentication(authentication.BaseAuthentication):
    """``Authorization: Bearer mws_...`` — a wallet session from Sign-In with Ethereum
    (docs/wallets.md). The credential's subject is the EIP-55 checksummed wallet; it carries
    no roles and no organization. Not a default class: the views that take wallet sessions
    (the installer's) name it."""

    def authenticate(self, request):
        header = authentication.get_authorization_header(request).decode("latin-1")
        scheme, _, secret = header.partition(" ")
        secret = secret.strip()
        if scheme.lower() != "bearer" or not secret.startswith(f"{SESSION_SCHEME}_"):
            return None
        session = authenticate_wallet_session(secret)
        if session is None:
            raise WalletSessionAuthenticationFailed(request)
        request._request.mandate_wallet_session = session
        return AnonymousUser(), Credential(kind=WALLET, subject_id=session.wallet, credential_id=str(session.pk))

    def authenticate_header(self, request):
        return 'Bearer realm="mandate"'


def wallet_session_of(request):
    """The ``WalletSession`` a wallet-authenticated request carries, else None."""
    return getattr(getattr(request, "_request", request), "mandate_wallet_session", None)


def oidc_identity_of(request) -> OIDCIdentity | None:
    """The ``OIDCIdentity`` an ID-token request carries, else None."""
    return getattr(getattr(request, "_request", request), "mandate_oidc", None)


def lease_of(request):
    """The ``LeaseContext`` a lease-authenticated request carries, else None."""
    return getattr(getattr(request, "_request", request), "mandate_lease", None)


def operator_of(request):
    """The ``OperatorContext`` an operator-key request carries, else None."""
    return getattr(getattr(request, "_request", request), "mandate_operator", None)
