from django.apps import AppConfig


class EnvelopesConfig(AppConfig):
    name = "envelopes"
    verbose_name = "Envelopes"

    def ready(self):
        from envelopes.delivery import outbox, tasks

        outbox.use_queue(tasks.queue_delivery)
