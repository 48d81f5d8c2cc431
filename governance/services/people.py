"""Organizations, people, roles and teams: the use cases admins and bootstrap share."""

import secrets

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import validate_slug
from django.db import transaction

from governance.audit import record_admin_action
from governance.choices import Role, canonical_role, expand_roles
from governance.errors import Conflict, Invalid
from governance.models import Organization, Person, RoleAssignment, Team, TeamMembership


@transaction.atomic
def ensure_organization(slug: str, name: str) -> Organization:
    organization, _ = Organization.objects.get_or_create(slug=slug, defaults={"name": name})
    return organization


def default_organization() -> Organization:
    """The organization named by ``MANDATE_DEFAULT_ORGANIZATION``, created on first use: where
    open mode and superusers without an organization act."""
    organization, _ = Organization.objects.get_or_create(
        slug=settings.MANDATE_DEFAULT_ORGANIZATION, defaults={"name": settings.MANDATE_DEFAULT_ORGANIZATION}
    )
    return organization


def person_roles(person: Person) -> frozenset[str]:
    """The roles a person holds (every role for a superuser), with those their roles imply."""
    if person.is_superuser:
        return frozenset(Role.values)
    return expand_roles(person.role_assignments.values_list("role", flat=True))


def person_teams(person: Person) -> dict[str, bool]:
    """The teams a person is in, by id, and whether they own each (one query)."""
    memberships = TeamMembership.objects.filter(person=person).values_list("team_id", "is_owner")
    return {str(team_id): owner for team_id, owner in memberships}


@transaction.atomic
def assign_roles(person: Person, roles) -> None:
    for role in roles:
        RoleAssignment.objects.get_or_create(person=person, role=canonical_role(role))


@transaction.atomic
def create_person(
    organization: Organization,
    username: str,
    *,
    password: str | None = None,
    roles=(),
    manager=None,
    email: str = "",
    staff: bool = True,
    **fields,
) -> Person:
    person = Person(
        organization=organization, username=username, email=email, manager=manager, is_staff=staff, **fields
    )
    if password:
        person.set_password(password)
    else:
        person.set_unusable_password()
    person.save()
    assign_roles(person, roles)
    return person


@transaction.atomic
def add_team_member(team: Team, person: Person, *, owner: bool = False) -> TeamMembership:
    membership, _ = TeamMembership.objects.update_or_create(team=team, person=person, defaults={"is_owner": owner})
    return membership


FIRST_ADMIN_ROLES = (Role.PLATFORM_ADMIN, Role.GOVERNANCE_APPROVER, Role.GOVERNANCE_REVIEWER)


@transaction.atomic
def create_organization(slug: str, name: str, *, admin_username: str, admin_email: str = "") -> tuple[Person, str]:
    """A new tenant with its first admin; returns the admin and their one-time password.

    The admin is not a superuser (a superuser holds every role in every organization) and
    must change the password at first login, like the demo's bootstrap admin.
    """
    try:
        validate_slug(slug)
    except ValidationError as exc:
        raise Invalid(f"organization slug {slug!r}: letters, digits, - and _ only", field="slug") from exc
    if not name.strip():
        raise Invalid("organization name is required", field="name")
    if Organization.objects.filter(slug=slug).exists():
        raise Conflict(f"organization {slug!r} already exists")
    if Person.objects.filter(username=admin_username).exists():
        raise Conflict(f"username {admin_username!r} is taken")
    organization = Organization.objects.create(slug=slug, name=name.strip())
    password = secrets.token_urlsafe(12)
    admin = create_person(
        organization,
        admin_username,
        password=password,
        roles=FIRST_ADMIN_ROLES,
        email=admin_email,
        must_change_password=True,
    )
    # No password material in the record.
    record_admin_action(
        action="organization.created",
        actor_type="system",
        actor_id="system:cli",
        organization_id=organization.pk,
        target_type="organization",
        target_id=str(organization.pk),
        details={"slug": slug, "admin_username": admin_username, "admin_id": str(admin.pk)},
    )
    return admin, password
