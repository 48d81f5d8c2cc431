from django.core.management.base import BaseCommand, CommandError

from evidence.services.verification import verify_ledger


class Command(BaseCommand):
    help = "Re-hash every audit event and ledger link; exit non-zero where the ledger is broken."

    def handle(self, *args, **options):
        verdict = verify_ledger()
        if not verdict.valid:
            raise CommandError(f"ledger broken at {verdict.broken_at}: {verdict.error_kind}: {verdict.error_message}")
        self.stdout.write(f"ledger valid: {verdict.events_checked} events")
