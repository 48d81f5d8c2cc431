"""The admin-audit trail, as identity code writes to it.

A password change and the bootstrap admin's creation leave an admin-audit record in the same
transaction. The trail is evidence's, and evidence sits above governance (it imports
governance, never the reverse), so ``EvidenceConfig.ready`` hands this module the function
that writes a record (``use_recorder``).
"""

from collections.abc import Callable

from django.core.exceptions import ImproperlyConfigured

_recorder: Callable[..., object] | None = None


def use_recorder(recorder: Callable[..., object]) -> None:
    """Write admin-audit records with ``recorder`` (``evidence.services.audit_trails.record_admin_action``)."""
    global _recorder
    _recorder = recorder


def record_admin_action(**fields) -> None:
    """One admin-audit record, with the fields of ``evidence.services.audit_trails.record_admin_action``."""
    if _recorder is None:
        raise ImproperlyConfigured("no admin-audit recorder: EvidenceConfig.ready wires it")
    _recorder(**fields)
