"""Organizations, people, roles and teams: the use cases admins and bootstrap share."""

from django.conf import settings
from django.db import transaction

from governance.choices import Role, canonical_role, expand_roles
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
