"""Reload the action gate's catalogue and policy, as ``POST /v1/admin/reload`` does (for
deploys: run it after new manifests or a new policy.rego are in place). ``--check`` only
validates the files and lists every problem, writing nothing."""

from django.core.management.base import BaseCommand, CommandError

from controlplane.gate.audit import Actor
from controlplane.gate.manifests import ManifestError
from controlplane.gate.registry import actions_dir, read_catalogue, reload
from controlplane.gate.rego import PolicyError, compile_check, read_policy_source


class Command(BaseCommand):
    help = "Reload (or --check) the action gate's manifests and policy."

    def add_arguments(self, parser):
        parser.add_argument("--check", action="store_true", help="validate only; change nothing")
        parser.add_argument("--actor", default="cli", help="recorded as who reloaded")

    def handle(self, *args, check, actor, **options):
        try:
            if check:
                manifests = read_catalogue(actions_dir())
                compile_check(read_policy_source())
                self.stdout.write(f"ok: {len(manifests)} manifests in {actions_dir()}, the policy compiles")
                return
            result = reload(actor=Actor.named(actor, "cli"))
        except ManifestError as exc:
            for source, name, message in exc.problems:
                self.stderr.write(f"{source}: {name}: {message}" if name else f"{source}: {message}")
            raise CommandError(f"{len(exc.problems)} problem(s); nothing was changed") from exc
        except PolicyError as exc:
            raise CommandError(f"the policy does not compile: {exc}; nothing was changed") from exc
        changed = ", ".join(result.changed) or "none"
        self.stdout.write(
            f"reloaded: {result.manifests_loaded} manifests (changed: {changed}), "
            f"catalogue v{result.catalogue_version}, policy v{result.policy_version}"
        )
