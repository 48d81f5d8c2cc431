"""Create the demo organization: its bootstrap admin, a second approver and a manager who
can sign in, and a demo API token (idempotent).

Secrets are printed once, when they are created; re-running prints only what exists.
Everyone who signs in with a printed password must choose their own at first login.
"""

import hashlib
import secrets

from django.contrib.staticfiles import finders
from django.core.management.base import BaseCommand
from django.db import transaction

from governance.audit import record_admin_action
from governance.choices import Role
from governance.models import Person, RuntimePackage, Team
from governance.services.people import add_team_member, create_person, ensure_organization
from governance.services.runtime_packages import register_package
from governance.services.tokens import issue_token

DECIDERS = [Role.GOVERNANCE_APPROVER, Role.GOVERNANCE_REVIEWER]

# The people who sign in, in the order they are printed. ``manager`` names another entry:
# admin's manager is Morgan, so ``notify_manager`` routes of admin's agents reach someone;
# Alice is the second approver, so admin's agents' requests (admin owns them: separation
# of duties) can be decided by someone else.
SIGN_IN = [
    {
        "username": "admin",
        "first_name": "Demo",
        "last_name": "Admin",
        "roles": [Role.PLATFORM_ADMIN, *DECIDERS],
        "is_superuser": True,
        "what": "platform admin; owns the demo agents",
    },
    {"username": "alice", "first_name": "Alice", "last_name": "Approver", "roles": DECIDERS, "what": "second approver"},
    {
        "username": "morgan",
        "first_name": "Morgan",
        "last_name": "Manager",
        "roles": DECIDERS,
        "what": "admin's manager",
    },
]
MANAGERS = {"admin": "morgan", "alice": "morgan"}


class Command(BaseCommand):
    help = "Create the demo organization: admin, a second approver, a manager, and a demo API token."

    def add_arguments(self, parser):
        parser.add_argument("--base-url", default="http://127.0.0.1:8080")

    @transaction.atomic
    def handle(self, *args, base_url, **options):
        organization = ensure_organization("demo", "Demo Organization")
        lines = [f"  sign in at {base_url}/accounts/login/ (each printed password must be changed at first login):"]
        people = {}
        for spec in SIGN_IN:
            person, password = self._sign_in_person(organization, dict(spec))
            people[person.username] = person
            shown = f"password '{password}'" if password else "password set earlier"
            lines.append(f"    user {person.username!r:<9} {shown:<30} {spec['what']}")
        for username, manager in MANAGERS.items():
            person = people[username]
            if person.manager_id is None:
                person.manager = people[manager]
                person.save(update_fields=["manager"])

        if not Person.objects.filter(username="bob").exists():
            bob = create_person(
                organization,
                "bob",
                roles=[Role.PLATFORM_OPERATOR],
                manager=people["alice"],
                email="bob@demo.example",
                first_name="Bob",
                last_name="Operator",
            )
            team, _ = Team.objects.get_or_create(organization=organization, name="Payments")
            add_team_member(team, people["alice"], owner=True)
            add_team_member(team, bob)

        admin = people["admin"]
        if not admin.api_tokens.filter(name="demo").exists():
            _, secret = issue_token(admin, "demo", [Role.PLATFORM_ADMIN])
            lines.append(f"  demo API token (shown once): {secret}")
            lines.append(f"    curl -fsS -H 'Authorization: Bearer {secret}' {base_url}/v1/audit/verify")
        else:
            lines.append("  demo API token: created earlier (make a new one: manage.py create_api_token)")

        lines.append(self._governed_runtime(organization, base_url))

        self.stdout.write("Mandate demo organization ready:")
        for line in lines:
            self.stdout.write(line)
        self.stdout.write(f"  inbox:         {base_url}/admin/envelopes/inbox/")
        self.stdout.write(f"  agents:        {base_url}/agents")
        self.stdout.write(f"  API docs:      {base_url}/api/docs/")

    def _sign_in_person(self, organization, spec) -> tuple[Person, str]:
        """The person, and their one-time password when it was set now ("" otherwise). A
        person left by an older demo without a usable password gets one now."""
        username, what = spec.pop("username"), spec.pop("what")
        password = secrets.token_urlsafe(12)
        person = Person.objects.filter(username=username).first()
        if person is None:
            person = create_person(
                organization,
                username,
                password=password,
                email=f"{username}@demo.example",
                must_change_password=True,
                **spec,
            )
            # A platform-level record (no organization): see docs/admin-audit.md. No password material.
            record_admin_action(
                action="bootstrap.admin_created" if username == "admin" else "bootstrap.person_created",
                actor_type="system",
                actor_id="system:bootstrap",
                target_type="user",
                target_id=str(person.pk),
                details={"username": username, "role": what},
            )
            return person, password
        if person.has_usable_password():
            return person, ""
        person.set_password(password)
        person.must_change_password = True
        person.save(update_fields=["password", "must_change_password"])
        return person, password

    def _governed_runtime(self, organization, base_url) -> str:
        """The demo root for governed-runtime installs, and a Mandate-signed package per
        platform (docs/installs.md): a launcher's owner is added as a principal in the console."""
        if not organization.org_root_id:
            organization.org_root_id = "org.demo.root"
            organization.save(update_fields=["org_root_id"])
        with open(finders.find(DEMO_PACKAGE), "rb") as artifact:
            package_hash = "sha256:" + hashlib.sha256(artifact.read()).hexdigest()
        for platform in DEMO_PLATFORMS:
            if not RuntimePackage.objects.filter(platform=platform, rollout_channel="stable").exists():
                register_package(
                    platform=platform,
                    rollout_channel="stable",
                    runtime_version="1.0.0",
                    package_url=f"{base_url}/static/{DEMO_PACKAGE}",
                    package_hash=package_hash,
                    policy_hash="sha256:" + hashlib.sha256(b"demo governance policy v1").hexdigest(),
                    created_by="system:demo",
                )
        return (
            f"  governed runtime: root {organization.org_root_id}; packages for {', '.join(DEMO_PLATFORMS)} "
            f"({base_url}/admin/governance/runtimepackage/); add a principal and its wallets in the console"
        )


# The demo's runtime package: one real file (static), offered for every platform.
DEMO_PACKAGE = "mandate/runtime/demo-runtime-1.0.0.txt"
DEMO_PLATFORMS = ("macos", "linux", "windows")
