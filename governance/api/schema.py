"""How Mandate's credential kinds appear in the OpenAPI schema."""

from drf_spectacular.extensions import OpenApiAuthenticationExtension


class BearerTokenScheme(OpenApiAuthenticationExtension):
    target_class = "governance.api.authentication.BearerTokenAuthentication"
    name = "bearerToken"

    def get_security_definition(self, auto_schema):
        return {
            "type": "http",
            "scheme": "bearer",
            "description": "A Mandate API token (mdt_...), created by an admin and shown once.",
        }


class SessionScheme(OpenApiAuthenticationExtension):
    target_class = "governance.api.authentication.SessionAuthentication"
    name = "cookieAuth"

    def get_security_definition(self, auto_schema):
        return {"type": "apiKey", "in": "cookie", "name": "sessionid"}


class OperatorKeyScheme(OpenApiAuthenticationExtension):
    target_class = "governance.api.authentication.DPoPOperatorAuthentication"
    name = "operatorKey"

    def get_security_definition(self, auto_schema):
        return {
            "type": "http",
            "scheme": "DPoP",
            "description": (
                "An operator key (mdo_...) as `Authorization: DPoP <key>`, with a `DPoP` proof (RFC 9449) made "
                "by the key pair the operator key is bound to; `ath` is the SHA-256 of the key (docs/gate.md)."
            ),
        }


class LeaseScheme(OpenApiAuthenticationExtension):
    target_class = "governance.api.authentication.LeaseAuthentication"
    name = "dpopLease"

    def get_security_definition(self, auto_schema):
        return {
            "type": "http",
            "scheme": "DPoP",
            "description": (
                "A lease from POST /v1/leases as `Authorization: DPoP <lease>`, with a fresh `DPoP` proof "
                "(RFC 9449) bound to the method and to PUBLIC_BASE_URL + path (docs/gate.md)."
            ),
        }


class OIDCScheme(OpenApiAuthenticationExtension):
    target_class = "governance.api.authentication.OIDCAuthentication"
    name = "oidcIdToken"

    def get_security_definition(self, auto_schema):
        return {
            "type": "http",
            "scheme": "bearer",
            "bearerFormat": "JWT",
            "description": (
                "An OpenID Connect ID token (e.g. a Google identity token) from an issuer in "
                "MANDATE_OIDC_ISSUERS, its audience this service's (docs/oidc.md)."
            ),
        }


class WalletSessionScheme(OpenApiAuthenticationExtension):
    target_class = "governance.api.authentication.WalletSessionAuthentication"
    name = "walletSession"

    def get_security_definition(self, auto_schema):
        return {
            "type": "http",
            "scheme": "bearer",
            "description": (
                "A wallet session (mws_...) from POST /governance/auth/verify: Sign-In with Ethereum "
                "(docs/wallets.md). The installer's endpoints take it (docs/installs.md)."
            ),
        }
