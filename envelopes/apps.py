from django.apps import AppConfig


class EnvelopesConfig(AppConfig):
    name = "envelopes"
    verbose_name = "Envelopes"

    def ready(self):
        """Wire the capability packages to the core's one decision path: each kind's rules,
        the outbox that turns decisions into webhooks (and the queue that sends them), and
        the bus that wakes waiters; and the names of people and channels that evidence pages
        show for performers."""
        from envelopes.delivery import outbox, tasks
        from envelopes.evaluation.reviews import EvaluationRules
        from envelopes.gate import approvals, budgets, ledger
        from envelopes.gate.rules import ActionRules
        from envelopes.inbox.labels import channel_names, people_names
        from envelopes.requests import bus
        from envelopes.requests.decisions import RequestRules
        from envelopes.services import decide
        from evidence import performers

        performers.register("user", people_names)
        performers.register("person", people_names)
        performers.register("channel", channel_names)
        decide.register_kind(EvaluationRules())
        decide.register_kind(RequestRules())
        decide.register_kind(ActionRules())
        ActionRules.run_claimed = staticmethod(approvals.run_claimed)
        ActionRules.record_result = staticmethod(approvals.record_result)
        ledger.connect()
        budgets.connect()
        decide.connect_outbox(outbox.enqueue_deliveries)
        decide.connect_notifier(bus.publish_many)
        outbox.use_queue(tasks.queue_delivery)
