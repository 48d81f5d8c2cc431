import logging

from celery import shared_task

from evidence.services.receipts import verify_receipts
from evidence.services.verification import verify_ledger

logger = logging.getLogger(__name__)


@shared_task(name="evidence.verify_ledger")
def verify_ledger_task() -> dict:
    """Periodic integrity sweep of the whole ledger and the gate's receipts; a break is logged
    as an error."""
    verdict = verify_ledger()
    receipts = verify_receipts()
    result = {
        "valid": verdict.valid and receipts.valid,
        "events_checked": verdict.events_checked,
        "error_kind": verdict.error_kind or (None if receipts.valid else "receipt_invalid"),
        "broken_at": verdict.broken_at,
        "receipts_checked": receipts.receipts_checked,
        "broken_receipt_id": receipts.broken_receipt_id,
    }
    if verdict.valid:
        logger.info("ledger verified", extra=result)
    else:
        logger.error("ledger integrity broken", extra={**result, "error_message": verdict.error_message})
    return result
