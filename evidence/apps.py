from django.apps import AppConfig


class EvidenceConfig(AppConfig):
    name = "evidence"
    verbose_name = "Evidence"

    def ready(self):
        from evidence.services.audit_trails import record_admin_action
        from governance import audit

        audit.use_recorder(record_admin_action)
