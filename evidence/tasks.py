import logging

from celery import shared_task

from evidence.services.verification import verify_ledger

logger = logging.getLogger(__name__)


@shared_task(name="evidence.verify_ledger")
def verify_ledger_task() -> dict:
    """Periodic integrity sweep of the whole ledger; a broken ledger is logged as an error."""
    verdict = verify_ledger()
    result = {
        "valid": verdict.valid,
        "events_checked": verdict.events_checked,
        "error_kind": verdict.error_kind,
        "broken_at": verdict.broken_at,
    }
    if verdict.valid:
        logger.info("ledger verified", extra=result)
    else:
        logger.error("ledger integrity broken", extra={**result, "error_message": verdict.error_message})
    return result
