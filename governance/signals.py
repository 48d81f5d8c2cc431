from allauth.account.signals import password_changed, password_reset, password_set
from django.dispatch import receiver

from governance.api.request_meta import client_ip_of, request_id_of
from governance.services.passwords import record_password_changed

_FLOWS = {password_changed: "change", password_set: "set", password_reset: "reset"}


@receiver(password_changed)
@receiver(password_set)
@receiver(password_reset)
def clear_password_change_requirement(sender, request, user, signal=None, **kwargs):
    """A password changed in the browser (allauth): clear the bootstrap flag and audit it."""
    record_password_changed(
        user,
        via="browser",
        flow=_FLOWS.get(signal, "change"),
        request_id=request_id_of(request) if request is not None else "",
        client_ip=client_ip_of(request) if request is not None else "",
    )
