from django.apps import AppConfig


class EntitlementsConfig(AppConfig):
    name = "entitlements"

    def ready(self):
        from entitlements.services.issuance import held_status_entitlement, held_status_entitlements
        from governance import install_ports

        # The installer asks whether an ownership wallet holds the governance entitlement (and
        # heartbeats ask it of many at once).
        install_ports.use_entitlements(held_status_entitlement, entitlements_of=held_status_entitlements)
