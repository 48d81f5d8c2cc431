import json
import sys

from django.core.management.base import BaseCommand, CommandError

from governance.services.oidc import OIDCRejected, verify_id_token


class Command(BaseCommand):
    help = (
        "Verify an OpenID Connect ID token against MANDATE_OIDC_ISSUERS, as the API would: print the "
        "identity it gives, or the code and reason it is refused with (docs/oidc.md)."
    )

    def add_arguments(self, parser):
        parser.add_argument("token", help="the ID token; '-' reads it from standard input")

    def handle(self, *args, token, **options):
        if token == "-":
            token = sys.stdin.read().strip()  # keeps the token out of the process list
        try:
            identity = verify_id_token(token)
        except OIDCRejected as exc:
            raise CommandError(f"{exc.code}: {exc.message}") from None
        self.stdout.write(
            json.dumps(
                {
                    "principal": identity.principal,
                    "issuer": identity.issuer,
                    "issuer_name": identity.issuer_name,
                    "subject": identity.subject,
                    "email": identity.email,
                    "expires_at": identity.expires_at.isoformat(),
                },
                indent=2,
            )
        )
