from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.db import connections

from evidence.database_roles import app_role_grants


class Command(BaseCommand):
    help = (
        "Grant the application's database role its least privileges (PostgreSQL): run as the "
        "schema's owner after every migrate. See docs/deployment.md."
    )

    def add_arguments(self, parser):
        parser.add_argument("role", help="the role the application connects as")
        parser.add_argument(
            "--database",
            default=settings.MANDATE_OWNER_DATABASE,
            help="the database alias connected as the owner (default: the one migrations use)",
        )
        parser.add_argument("--sql", action="store_true", help="print the statements instead of running them")

    def handle(self, *args, role, database, sql, **options):
        connection = connections[database]
        if connection.vendor != "postgresql":
            raise CommandError("database roles are a PostgreSQL feature; this database is " + connection.vendor)
        with connection.cursor() as cursor:
            cursor.execute("SELECT current_user, current_schema()")
            owner, schema = cursor.fetchone()
            statements = app_role_grants(owner=owner, app=role, schema=schema)
            if sql:
                self.stdout.write(";\n".join(statements) + ";")
                return
            for statement in statements:
                cursor.execute(statement)
        self.stdout.write(f"granted {role} the application's privileges on schema {schema} (owner {owner})")
