"""Teach an action a domain or a path from the command line (source ``cli``), or forget it:
LatchGate's ``latchgate domains add`` / ``paths add``."""

from django.core.management.base import BaseCommand, CommandError

from controlplane.choices import TargetSource
from controlplane.gate import learned
from controlplane.gate.audit import Actor
from governance.errors import GateError


class Command(BaseCommand):
    help = "Learn (or --forget) a domain or a path glob for an action."

    def add_arguments(self, parser):
        parser.add_argument("kind", choices=["domain", "path"])
        parser.add_argument("action_id")
        parser.add_argument("value", help="a domain (api.example.com, *.example.com) or a relative path glob")
        parser.add_argument("--by", default="cli", help="recorded as who added it")
        parser.add_argument("--forget", action="store_true", help="remove it instead")

    def handle(self, *args, kind, action_id, value, by, forget, **options):
        actor = Actor.named(by, "cli")
        try:
            if forget:
                forget_one = learned.forget_domain if kind == "domain" else learned.forget_path
                removed = forget_one(action_id, value, actor=actor)
                self.stdout.write(f"{'removed' if removed else 'not learned'}: {kind} {value} for {action_id}")
                return
            learn = learned.learn_domain if kind == "domain" else learned.learn_path
            row = learn(action_id, value, TargetSource.CLI, actor)
        except GateError as exc:
            raise CommandError(f"{exc.code}" + (f": {exc.reason}" if exc.reason else "")) from exc
        self.stdout.write(f"learned: {kind} {getattr(row, kind)} for {action_id}")
