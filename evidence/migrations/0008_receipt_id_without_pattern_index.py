"""Drop the LIKE-only index Django adds beside a varchar primary key (created at the end of
0007, so dropped here): receipts are read by id, never by prefix, and every insert at the
gate's rate would pay for it."""

from django.db import migrations

from evidence.migration_ops import postgres_sql

NO_ID_PATTERN_INDEX = 'DROP INDEX IF EXISTS "evidence_receipt_receipt_id_59f37d64_like";'
ID_PATTERN_INDEX = (
    'CREATE INDEX IF NOT EXISTS "evidence_receipt_receipt_id_59f37d64_like" '
    'ON "evidence_receipt" ("receipt_id" varchar_pattern_ops);'
)


class Migration(migrations.Migration):
    dependencies = [("evidence", "0007_receipts_and_gate_event_indexes")]
    operations = [postgres_sql(NO_ID_PATTERN_INDEX, ID_PATTERN_INDEX)]
