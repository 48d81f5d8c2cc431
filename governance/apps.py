import logging

from django.apps import AppConfig
from django.conf import settings

logger = logging.getLogger("mandate.security")


class GovernanceConfig(AppConfig):
    name = "governance"
    verbose_name = "Identity"

    def ready(self):
        from governance import signals  # noqa: F401  (registers receivers)
        from governance.api import schema  # noqa: F401  (registers OpenAPI extensions)
        from governance.services.oidc import trusted_issuers

        trusted_issuers()  # a bad MANDATE_OIDC_ISSUERS entry stops the start, not a request

        if settings.MANDATE_AUTH_MODE == "open":
            logger.warning(
                "MANDATE_AUTH_MODE=open: unauthenticated API calls act as platform admin. "
                "Never use this outside a local experiment."
            )
        elif settings.MANDATE_AUTH_MODE != "token":
            from django.core.exceptions import ImproperlyConfigured

            raise ImproperlyConfigured("MANDATE_AUTH_MODE must be 'token' or 'open'")
