from django.core.management.base import BaseCommand, CommandError

from evidence.services.receipts import verify_receipts
from evidence.services.verification import verify_ledger


class Command(BaseCommand):
    help = (
        "Re-hash every audit event and ledger link and check every gate receipt; "
        "exit non-zero where the ledger or a receipt is broken."
    )

    def handle(self, *args, **options):
        verdict = verify_ledger()
        if not verdict.valid:
            raise CommandError(f"ledger broken at {verdict.broken_at}: {verdict.error_kind}: {verdict.error_message}")
        receipts = verify_receipts()
        if not receipts.valid:
            raise CommandError(f"receipt {receipts.broken_receipt_id} does not verify: {receipts.status}")
        self.stdout.write(
            f"ledger valid: {verdict.events_checked} events; {receipts.receipts_checked} receipts verified"
        )
