"""Local-user passwords: signing in with one, changing it, and the audit record a change leaves."""

from allauth.account.adapter import get_adapter
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.db import transaction

from governance.audit import record_admin_action
from governance.models import Person


class LoginThrottled(Exception):
    """Too many failed sign-ins for this username or address (allauth's ``login_failed`` limits)."""


class PasswordChangeRejected(Exception):
    def __init__(self, error: str, problems: list[str] | None = None):
        super().__init__(error)
        self.error = error
        self.problems = problems or []


def authenticate_local_user(http_request, username: str, password: str) -> Person | None:
    """The active person with this username and password, else None.

    Goes through allauth's adapter so failed attempts count against the same rate limits
    as the browser sign-in form (both paths share one budget per username and per IP).
    """
    try:
        person = get_adapter(http_request).authenticate(http_request, username=username, password=password)
    except ValidationError as exc:  # allauth's "too_many_login_attempts"
        raise LoginThrottled() from exc
    # allauth hands back deactivated people with the right password (to show its "inactive"
    # page); to the API they are just invalid credentials.
    return person if person is not None and person.is_active else None


def record_password_changed(person: Person, *, via: str, flow: str = "change", request_id="", client_ip="") -> None:
    """A password changed: the bootstrap requirement is met, and the admin-audit trail says so.

    No password material is recorded. Used by the JSON API and by allauth's browser flows.
    """
    with transaction.atomic():
        if person.must_change_password:
            person.must_change_password = False
            person.save(update_fields=["must_change_password"])
        record_admin_action(
            action="password.changed",
            actor_type="user",
            actor_id=str(person.pk),
            organization_id=person.organization_id,
            target_type="user",
            target_id=str(person.pk),
            request_id=request_id,
            client_ip=client_ip,
            details={"via": via, "flow": flow},
        )


def change_password(person: Person, current_password: str, new_password: str, *, request_id="", client_ip="") -> None:
    """Replace ``person``'s password after checking the current one and the password validators."""
    if not person.check_password(current_password):
        raise PasswordChangeRejected("current password is incorrect")
    problems = []
    if new_password == current_password:
        problems.append("The new password must differ from the current password.")
    try:
        validate_password(new_password, user=person)
    except ValidationError as exc:
        problems += exc.messages
    if problems:
        raise PasswordChangeRejected("new password rejected", problems)
    with transaction.atomic():
        person.set_password(new_password)
        person.save(update_fields=["password"])
        record_password_changed(person, via="api", request_id=request_id, client_ip=client_ip)
