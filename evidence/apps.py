from functools import partial

from django.apps import AppConfig


class EvidenceConfig(AppConfig):
    name = "evidence"
    verbose_name = "Evidence"

    def ready(self):
        from evidence.choices import KeyAlgorithm
        from evidence.services import keys
        from evidence.services.audit_trails import record_admin_action
        from evidence.services.chain import append_event
        from evidence.services.receipts import receipt_keys
        from governance import audit, install_ports
        from governance.gate import signing

        audit.use_recorder(record_admin_action)
        # Leases are ES256 JWTs signed with the platform's ES256 key (persisted, rotated,
        # published in /.well-known/jwks.json with its retired predecessors).
        signing.use_keys(
            active_kid=lambda: keys.active_key(KeyAlgorithm.ES256).kid,
            sign=partial(keys.sign, KeyAlgorithm.ES256),
            verify=keys.verify,
        )
        # The installer's device chains, its package and renewal signatures (Ed25519, the key
        # receipts and seals use, published with its retired predecessors).
        install_ports.use_evidence(
            append=lambda chain_id, event_type, payload, performer_id, performer_type: append_event(
                chain_id, event_type, payload, performer_type=performer_type, performer_id=performer_id
            ),
            sign=lambda data: _signed(keys.sign(KeyAlgorithm.ED25519, data)),
            public_keys=lambda: receipt_keys()["keys"],
            active_kid=lambda: keys.active_key(KeyAlgorithm.ED25519).kid,
        )


def _signed(signature):
    from governance.install_ports import Signed

    return Signed(kid=signature.kid, signature=signature.value)
