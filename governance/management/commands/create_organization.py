"""Create an organization with its first admin, so a new tenant needs no Django shell.

The admin's one-time password is printed once; they must change it at first login.
"""

from django.core.management.base import BaseCommand, CommandError

from governance.errors import DomainError
from governance.services.people import create_organization


class Command(BaseCommand):
    help = "Create an organization and its first admin (platform.admin, approver, reviewer)."

    def add_arguments(self, parser):
        parser.add_argument("slug", help="the organization's slug, e.g. acme")
        parser.add_argument("name", help='the organization\'s name, e.g. "Acme Ltd"')
        parser.add_argument("--admin", required=True, help="username of the first admin")
        parser.add_argument("--email", default="", help="the first admin's email")

    def handle(self, *args, slug, name, admin, email, **options):
        try:
            person, password = create_organization(slug, name, admin_username=admin, admin_email=email)
        except DomainError as exc:
            raise CommandError(exc.error) from exc
        self.stdout.write(f"organization {slug!r} created")
        self.stdout.write(f"  admin login: user {person.username!r}   password '{password}' (shown once)")
        self.stdout.write("  (they will be asked to change this password on first login)")
