"""Apply a YAML bundle from a file, as `POST /v1/controlplane/apply` would.

With ``--approve-as USER`` the surface and profile versions the bundle created (always in
review) are then approved by that person (maker-checker still applies: the bundle's actor is
the submitter, so ``--approve-as`` must name someone else).
"""

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from controlplane.choices import Kind
from controlplane.services.bundles import apply_bundle
from controlplane.services.documents import BundleSyntaxError
from controlplane.services.lifecycle import Principal, approve_profile, approve_surface
from governance.errors import DomainError
from governance.models import Organization, Person
from governance.services.people import person_roles


class Command(BaseCommand):
    help = "Apply a YAML control-plane bundle to an organization."

    def add_arguments(self, parser):
        parser.add_argument("file")
        parser.add_argument("--organization", default="demo", help="organization slug")
        parser.add_argument("--actor", default="system:cli", help="recorded as the submitter")
        parser.add_argument("--approve-as", help="username that approves what the bundle created in review")

    def handle(self, *args, file, organization, actor, approve_as, **options):
        org = Organization.objects.filter(slug=organization).first()
        if org is None:
            raise CommandError(f"no organization {organization!r}")
        try:
            result = apply_bundle(org, Path(file).read_bytes(), actor=actor)
        except (OSError, BundleSyntaxError) as exc:
            raise CommandError(str(exc)) from exc
        if not result.written:
            for error in result.plan.validation_errors:
                self.stderr.write(f"{error['kind']} {error['id']} {error['field']}: {error['message']}")
            raise CommandError("bundle is invalid; nothing was applied")
        counts = ", ".join(f"{value} {key.removesuffix('_count')}" for key, value in sorted(result.counts().items()))
        self.stdout.write(f"applied {file}: {counts}")
        if approve_as:
            self._approve(org, result, approve_as)

    def _approve(self, org, result, username):
        person = Person.objects.filter(username=username).first()
        if person is None:
            raise CommandError(f"no person named {username!r}")
        principal = Principal.of(person, person_roles(person))
        for entry in result.plan.entries:
            if entry.action != "create":
                continue
            try:
                if entry.doc.kind == Kind.SURFACE:
                    approve_surface(organization=org, surface_id=entry.doc.id, principal=principal, submitted_by="")
                elif entry.doc.kind == Kind.PROFILE:
                    approve_profile(
                        organization=org, profile_id=entry.doc.id, version=entry.version, principal=principal
                    )
                else:
                    continue
            except DomainError as exc:
                raise CommandError(f"could not approve {entry.doc.kind} {entry.doc.id}: {exc.error}") from exc
            self.stdout.write(f"approved {entry.doc.kind} {entry.doc.id} v{entry.version} as {username}")
