import uuid

from django.contrib.auth.models import AbstractUser
from django.core.validators import RegexValidator
from django.db import models

from governance.choices import Role


class Organization(models.Model):
    """A tenant: everything an organization declares or decides belongs to one."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    slug = models.SlugField(max_length=100, unique=True)
    name = models.CharField(max_length=200)
    org_root_id = models.CharField(
        max_length=120,
        unique=True,
        null=True,
        blank=True,
        validators=[RegexValidator(r"\A[a-z0-9][a-z0-9._-]{0,119}\Z", "lower-case letters, digits and . _ -")],
        help_text="The organization root governed runtimes name (edut's org_root_id), e.g. org.acme.root.",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self):
        return self.name


class Person(AbstractUser):
    """A human (or a service principal) known to Mandate. Ids are UUIDs, as AIOS clients expect."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    organization = models.ForeignKey(
        Organization, null=True, blank=True, on_delete=models.PROTECT, related_name="people"
    )
    manager = models.ForeignKey("self", null=True, blank=True, on_delete=models.SET_NULL, related_name="reports")
    must_change_password = models.BooleanField(
        default=False, help_text="Set for bootstrap accounts: the first login must change the password."
    )

    class Meta:
        verbose_name = "person"
        verbose_name_plural = "people"
        ordering = ["username"]

    def __str__(self):
        # The one form the console names people in: "Alice Approver (alice)".
        full = self.get_full_name()
        return f"{full} ({self.username})" if full else self.username

    @property
    def role_names(self) -> list[str]:
        return sorted(self.role_assignments.values_list("role", flat=True))


class RoleAssignment(models.Model):
    person = models.ForeignKey(Person, on_delete=models.CASCADE, related_name="role_assignments")
    role = models.CharField(max_length=40, choices=Role.choices)
    granted_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["person", "role"], name="unique_person_role")]
        ordering = ["role"]

    def __str__(self):
        return f"{self.person} · {self.role}"


class Team(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="teams")
    name = models.CharField(max_length=200)
    members = models.ManyToManyField(Person, through="TeamMembership", related_name="teams")

    class Meta:
        constraints = [models.UniqueConstraint(fields=["organization", "name"], name="unique_team_name_per_org")]
        ordering = ["name"]

    def __str__(self):
        return self.name

    @property
    def owners(self):
        return self.members.filter(team_memberships__team=self, team_memberships__is_owner=True)


class TeamMembership(models.Model):
    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="memberships")
    person = models.ForeignKey(Person, on_delete=models.CASCADE, related_name="team_memberships")
    is_owner = models.BooleanField(default=False)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["team", "person"], name="unique_team_member")]

    def __str__(self):
        return f"{self.person} in {self.team}{' (owner)' if self.is_owner else ''}"
