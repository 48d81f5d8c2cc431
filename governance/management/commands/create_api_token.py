from django.core.management.base import BaseCommand, CommandError

from governance.choices import canonical_role
from governance.models import Person
from governance.services.tokens import issue_token


class Command(BaseCommand):
    help = "Create an API bearer token for a person; the secret is printed once."

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument("--name", required=True)
        parser.add_argument(
            "--role",
            action="append",
            dest="roles",
            required=True,
            help="repeat for several roles (aliases admin/operator/... accepted)",
        )

    def handle(self, *args, username, name, roles, **options):
        person = Person.objects.filter(username=username).first()
        if person is None:
            raise CommandError(f"no person named {username!r}")
        try:
            roles = [canonical_role(r) for r in roles]
        except ValueError as exc:
            raise CommandError(str(exc)) from exc
        token, secret = issue_token(person, name, roles)
        self.stdout.write(secret)
