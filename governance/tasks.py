from celery import shared_task

from governance.services.wallet_sessions import purge_spent_nonces


@shared_task(name="governance.purge_siwe_nonces")
def purge_siwe_nonces_task() -> int:
    """Deletes Sign-In with Ethereum nonces past their expiry (they can never verify again)."""
    return purge_spent_nonces()
