"""Migration operations for SQL that only PostgreSQL runs (functions, triggers); SQLite, the
embedded development database, does the same work in Python."""

from django.db import migrations


def postgres_sql(create: str, drop: str) -> migrations.RunPython:
    """Run ``create`` forwards and ``drop`` backwards, on PostgreSQL only."""

    def forwards(apps, schema_editor):
        if schema_editor.connection.vendor == "postgresql":
            schema_editor.execute(create, params=None)

    def backwards(apps, schema_editor):
        if schema_editor.connection.vendor == "postgresql":
            schema_editor.execute(drop, params=None)

    return migrations.RunPython(forwards, backwards)
