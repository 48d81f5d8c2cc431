"""The test database as the schema's owner sees it: tampering with the record the way
someone with the owner's access would, and emptying it between transactional tests.

With ``MANDATE_TEST_APP_ROLE`` set, tests run as that role (``-c role=...`` in the
connection's startup options; Django's ``assume_role`` deadlocks a connection pool) after the
login role, the owner, created and migrated the database; ``SET ROLE NONE`` returns to the
owner for the statements below.
"""

from contextlib import contextmanager

from django.db import connection

from evidence.database_roles import EVIDENCE_TABLES, app_role_grants


@contextmanager
def as_owner_unguarded(*tables):
    """Run the block's statements as the owner with the tables' triggers off (Postgres), in
    the caller's transaction; elsewhere, as is."""
    if connection.vendor != "postgresql":
        yield
        return
    with connection.cursor() as cursor:
        cursor.execute("SELECT current_user")
        (role,) = cursor.fetchone()
        cursor.execute("SET ROLE NONE")
        for table in tables:
            cursor.execute(f"ALTER TABLE {table} DISABLE TRIGGER USER")
        yield
        for table in tables:
            cursor.execute(f"ALTER TABLE {table} ENABLE TRIGGER USER")
        cursor.execute(connection.ops.compose_sql("SET ROLE %s", [role]))


def flush_as_owner(original):
    """Django's flush (a TRUNCATE of every table) as the owner, with the record's triggers
    off for that transaction: the tests' equivalent of dropping the database."""

    def sql_flush(self, style, tables, **kwargs):
        statements = original(self, style, tables, **kwargs)
        record = [table for table in EVIDENCE_TABLES if table in tables]
        if not statements or not record:
            return statements
        return [
            "SET LOCAL ROLE NONE",
            *(f"ALTER TABLE {table} DISABLE TRIGGER USER" for table in record),
            *statements,
            *(f"ALTER TABLE {table} ENABLE TRIGGER USER" for table in record),
        ]

    return sql_flush


def run_as_app_role(role: str | None) -> None:
    """Grant ``role`` the application's privileges (as the owner) and make every new
    connection assume it; ``None`` returns to the owner."""
    options = connection.settings_dict["OPTIONS"]
    if role:
        with connection.cursor() as cursor:
            cursor.execute("SELECT current_user, current_schema()")
            owner, schema = cursor.fetchone()
            for statement in app_role_grants(owner=owner, app=role, schema=schema):
                cursor.execute(statement)
        options["options"] = f"-c role={role}"
    else:
        options.pop("options", None)
    connection.close()
    if hasattr(connection, "close_pool"):
        connection.close_pool()
