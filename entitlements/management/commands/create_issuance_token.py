from django.core.management.base import BaseCommand, CommandError

from entitlements.services.issuers import make_issuance_token
from governance.models import Organization
from governance.services.people import default_organization


class Command(BaseCommand):
    help = (
        "Create an issuance token (gbx_...) for an organization; the secret is printed once, on the last "
        "line. Partners send it as X-GBX-ADMIN-TOKEN to POST /api/entitlement/issue (docs/entitlements.md)."
    )

    def add_arguments(self, parser):
        parser.add_argument("name", help="who will hold it, e.g. 'partner billing'")
        parser.add_argument("--organization", help="the organization's slug (default: the default organization)")

    def handle(self, *args, name, organization=None, **options):
        if not name.strip():
            raise CommandError("the name must not be empty")
        if organization:
            found = Organization.objects.filter(slug=organization).first()
            if found is None:
                raise CommandError(f"no organization with slug {organization!r}")
        else:
            found = default_organization()
        token, secret = make_issuance_token(found, name.strip(), created_by="manage.py")
        self.stdout.write(f"Issuance token {token.name!r} for {found.slug} (shown once; only its hash is kept):")
        self.stdout.write(secret)
