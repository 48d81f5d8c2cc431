"""Postgres itself refuses UPDATE and DELETE on audit events (and moves of the ledger
head backwards are the service's business, not the database's)."""

from django.db import migrations

CREATE = """
CREATE OR REPLACE FUNCTION evidence_refuse_audit_change() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'audit events are append-only: % refused on %', TG_OP, TG_TABLE_NAME
        USING ERRCODE = 'insufficient_privilege';
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER evidence_auditevent_immutable
    BEFORE UPDATE OR DELETE ON evidence_auditevent
    FOR EACH ROW EXECUTE FUNCTION evidence_refuse_audit_change();
"""

DROP = """
DROP TRIGGER IF EXISTS evidence_auditevent_immutable ON evidence_auditevent;
DROP FUNCTION IF EXISTS evidence_refuse_audit_change();
"""


def forwards(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(CREATE, params=None)


def backwards(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(DROP, params=None)


class Migration(migrations.Migration):
    dependencies = [("evidence", "0001_initial")]
    operations = [migrations.RunPython(forwards, backwards)]
