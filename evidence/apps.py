from functools import partial

from django.apps import AppConfig


class EvidenceConfig(AppConfig):
    name = "evidence"
    verbose_name = "Evidence"

    def ready(self):
        from evidence.choices import KeyAlgorithm
        from evidence.services import keys
        from evidence.services.audit_trails import record_admin_action
        from governance import audit
        from governance.gate import signing

        audit.use_recorder(record_admin_action)
        # Leases are ES256 JWTs signed with the platform's ES256 key (persisted, rotated,
        # published in /.well-known/jwks.json with its retired predecessors).
        signing.use_keys(
            active_kid=lambda: keys.active_key(KeyAlgorithm.ES256).kid,
            sign=partial(keys.sign, KeyAlgorithm.ES256),
            verify=keys.verify,
        )
