"""Create the demo organization, its bootstrap admin and a demo API token (idempotent).

Secrets are printed once, when they are created; re-running prints only what exists.
"""

import secrets

from django.core.management.base import BaseCommand
from django.db import transaction

from governance.audit import record_admin_action
from governance.choices import Role
from governance.models import Person, Team
from governance.services.people import add_team_member, create_person, ensure_organization
from governance.services.tokens import issue_token


class Command(BaseCommand):
    help = "Create the demo organization with a bootstrap admin and a demo API token."

    def add_arguments(self, parser):
        parser.add_argument("--base-url", default="http://127.0.0.1:8080")

    @transaction.atomic
    def handle(self, *args, base_url, **options):
        organization = ensure_organization("demo", "Demo Organization")
        lines = []
        admin = Person.objects.filter(username="admin").first()
        if admin is None:
            password = secrets.token_urlsafe(12)
            admin = create_person(
                organization,
                "admin",
                password=password,
                roles=[Role.PLATFORM_ADMIN, Role.GOVERNANCE_APPROVER, Role.GOVERNANCE_REVIEWER],
                email="admin@demo.example",
                is_superuser=True,
                must_change_password=True,
                first_name="Demo",
                last_name="Admin",
            )
            # A platform-level record (no organization): see docs/admin-audit.md. No password material.
            record_admin_action(
                action="bootstrap.admin_created",
                actor_type="system",
                actor_id="system:bootstrap",
                target_type="user",
                target_id=str(admin.pk),
                details={"username": admin.username},
            )
            lines.append(f"  admin login:   {base_url}/admin/   user 'admin'   password '{password}'")
            lines.append("                 (you will be asked to change this password on first login)")
        else:
            lines.append(f"  admin login:   {base_url}/admin/   user 'admin' (password set earlier)")

        if not Person.objects.filter(username="alice").exists():
            alice = create_person(
                organization,
                "alice",
                roles=[Role.GOVERNANCE_APPROVER],
                manager=admin,
                email="alice@demo.example",
                first_name="Alice",
                last_name="Approver",
            )
            bob = create_person(
                organization,
                "bob",
                roles=[Role.PLATFORM_OPERATOR],
                manager=alice,
                email="bob@demo.example",
                first_name="Bob",
                last_name="Operator",
            )
            team, _ = Team.objects.get_or_create(organization=organization, name="Payments")
            add_team_member(team, alice, owner=True)
            add_team_member(team, bob)

        if not admin.api_tokens.filter(name="demo").exists():
            _, secret = issue_token(admin, "demo", [Role.PLATFORM_ADMIN])
            lines.append(f"  demo API token (shown once): {secret}")
            lines.append(f"    curl -fsS -H 'Authorization: Bearer {secret}' {base_url}/v1/audit/verify")
        else:
            lines.append("  demo API token: created earlier (make a new one: manage.py create_api_token)")

        self.stdout.write("Mandate demo organization ready:")
        for line in lines:
            self.stdout.write(line)
        self.stdout.write(f"  API docs:      {base_url}/api/docs/")
