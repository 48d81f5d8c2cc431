from celery import shared_task

from governance.services.device_leases import park_expired_devices
from governance.services.wallet_sessions import purge_spent_nonces


@shared_task(name="governance.purge_siwe_nonces")
def purge_siwe_nonces_task() -> int:
    """Deletes Sign-In with Ethereum nonces past their expiry (they can never verify again)."""
    return purge_spent_nonces()


@shared_task(name="governance.park_expired_devices")
def park_expired_devices_task() -> int:
    """Parks devices whose availability lease expired (docs/device_leases.md); how many."""
    return park_expired_devices()
