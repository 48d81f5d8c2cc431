"""The record refuses its own app (Postgres only; docs/deployment.md).

- TRUNCATE, which row triggers never see, is refused on every evidence table.
- The control-plane and platform admin audit trails are append-only like audit events.
- The ledger head moves forward by design (UPDATE) but is never deleted, renumbered or moved
  back, and only a genesis head (seq 0) can be inserted.
- ``mandate_append_events`` runs as its owner (SECURITY DEFINER, a fixed search_path, no
  EXECUTE for PUBLIC), so the application's role needs no write access to the ledger at all:
  it can append only through the function, which links every row correctly.
"""

from django.db import migrations

from evidence.migration_ops import postgres_sql

CREATE = """
CREATE OR REPLACE FUNCTION evidence_refuse_record_change() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'evidence is append-only: % refused on %', TG_OP, TG_TABLE_NAME
        USING ERRCODE = 'insufficient_privilege';
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER evidence_auditevent_no_truncate
    BEFORE TRUNCATE ON evidence_auditevent
    FOR EACH STATEMENT EXECUTE FUNCTION evidence_refuse_record_change();

CREATE OR REPLACE FUNCTION evidence_guard_ledger_head() RETURNS trigger AS $$
BEGIN
    IF NEW.id <> 1
       OR (TG_OP = 'INSERT' AND (NEW.seq <> 0 OR NEW.hash <> ''))
       OR (TG_OP = 'UPDATE' AND (NEW.id <> OLD.id OR NEW.seq < OLD.seq)) THEN
        RAISE EXCEPTION 'the ledger head only moves forward: % refused on %', TG_OP, TG_TABLE_NAME
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN NEW;
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER evidence_ledgerhead_forward
    BEFORE INSERT OR UPDATE ON evidence_ledgerhead
    FOR EACH ROW EXECUTE FUNCTION evidence_guard_ledger_head();
CREATE TRIGGER evidence_ledgerhead_kept
    BEFORE DELETE ON evidence_ledgerhead
    FOR EACH ROW EXECUTE FUNCTION evidence_refuse_record_change();
CREATE TRIGGER evidence_ledgerhead_no_truncate
    BEFORE TRUNCATE ON evidence_ledgerhead
    FOR EACH STATEMENT EXECUTE FUNCTION evidence_refuse_record_change();

CREATE TRIGGER evidence_controlplaneauditrecord_append_only
    BEFORE UPDATE OR DELETE ON evidence_controlplaneauditrecord
    FOR EACH ROW EXECUTE FUNCTION evidence_refuse_record_change();
CREATE TRIGGER evidence_controlplaneauditrecord_no_truncate
    BEFORE TRUNCATE ON evidence_controlplaneauditrecord
    FOR EACH STATEMENT EXECUTE FUNCTION evidence_refuse_record_change();

CREATE TRIGGER evidence_adminauditrecord_append_only
    BEFORE UPDATE OR DELETE ON evidence_adminauditrecord
    FOR EACH ROW EXECUTE FUNCTION evidence_refuse_record_change();
CREATE TRIGGER evidence_adminauditrecord_no_truncate
    BEFORE TRUNCATE ON evidence_adminauditrecord
    FOR EACH STATEMENT EXECUTE FUNCTION evidence_refuse_record_change();

-- pg_catalog first and pg_temp last: a caller's objects never stand in for the ledger's.
DO $$
BEGIN
    EXECUTE format(
        'ALTER FUNCTION mandate_append_events(jsonb) SECURITY DEFINER SET search_path = pg_catalog, %I, pg_temp',
        current_schema());
END;
$$;
REVOKE EXECUTE ON FUNCTION mandate_append_events(jsonb) FROM PUBLIC;
"""

DROP = """
GRANT EXECUTE ON FUNCTION mandate_append_events(jsonb) TO PUBLIC;
ALTER FUNCTION mandate_append_events(jsonb) SECURITY INVOKER RESET search_path;
DROP TRIGGER IF EXISTS evidence_adminauditrecord_no_truncate ON evidence_adminauditrecord;
DROP TRIGGER IF EXISTS evidence_adminauditrecord_append_only ON evidence_adminauditrecord;
DROP TRIGGER IF EXISTS evidence_controlplaneauditrecord_no_truncate ON evidence_controlplaneauditrecord;
DROP TRIGGER IF EXISTS evidence_controlplaneauditrecord_append_only ON evidence_controlplaneauditrecord;
DROP TRIGGER IF EXISTS evidence_ledgerhead_no_truncate ON evidence_ledgerhead;
DROP TRIGGER IF EXISTS evidence_ledgerhead_kept ON evidence_ledgerhead;
DROP TRIGGER IF EXISTS evidence_ledgerhead_forward ON evidence_ledgerhead;
DROP FUNCTION IF EXISTS evidence_guard_ledger_head();
DROP TRIGGER IF EXISTS evidence_auditevent_no_truncate ON evidence_auditevent;
DROP FUNCTION IF EXISTS evidence_refuse_record_change();
"""


class Migration(migrations.Migration):
    dependencies = [("evidence", "0005_leaner_indexes")]
    operations = [postgres_sql(CREATE, DROP)]
