from django.apps import AppConfig


class EntitlementsConfig(AppConfig):
    name = "entitlements"

    def ready(self):
        from entitlements.services.issuance import held_status_entitlement
        from governance import install_ports

        # The installer asks whether an ownership wallet holds the governance entitlement.
        install_ports.use_entitlements(held_status_entitlement)
