"""``mandate_append_events(events jsonb)``: link events into the ledger and insert them, in
one statement (Postgres only; SQLite keeps the ORM path in ``evidence.services.chain``).

The caller computes each event's own hash (its subject chain needs no global state); the
function takes the ledger head's row lock, computes each ledger link exactly as
``evidence.canonical.ledger_hash`` does (RFC 8785 of three fields, SHA-256), inserts the
rows with one ``INSERT … SELECT`` and moves the head. The lock is therefore held for the
inserts and the commit only, never across a network round trip.
"""

from django.db import migrations

CREATE = r"""
CREATE OR REPLACE FUNCTION mandate_append_events(p_events jsonb)
RETURNS TABLE (out_ledger_seq bigint, out_ledger_prev_hash text, out_ledger_hash text)
LANGUAGE plpgsql AS $$
DECLARE
    v_seq bigint;
    v_prev text;
    v_link text;
    v_event jsonb;
    v_rows jsonb := '[]'::jsonb;
BEGIN
    SELECT seq, hash INTO v_seq, v_prev FROM evidence_ledgerhead WHERE id = 1 FOR UPDATE;
    IF NOT FOUND THEN
        INSERT INTO evidence_ledgerhead (id, seq, hash) VALUES (1, 0, '') ON CONFLICT (id) DO NOTHING;
        SELECT seq, hash INTO v_seq, v_prev FROM evidence_ledgerhead WHERE id = 1 FOR UPDATE;
    END IF;
    FOR v_event IN SELECT value FROM jsonb_array_elements(p_events) LOOP
        IF (v_event->>'hash') !~ '^[0-9a-f]{64}$' THEN
            RAISE EXCEPTION 'event hash must be 64 lowercase hex digits' USING ERRCODE = 'invalid_parameter_value';
        END IF;
        v_seq := v_seq + 1;
        v_link := encode(sha256(convert_to(
            '{"event_hash":"' || (v_event->>'hash') || '","ledger_prev_hash":"' || v_prev
            || '","ledger_seq":' || v_seq::text || '}', 'UTF8')), 'hex');
        v_rows := v_rows || jsonb_build_array(v_event || jsonb_build_object(
            'ledger_seq', v_seq, 'ledger_prev_hash', v_prev, 'ledger_hash', v_link));
        out_ledger_seq := v_seq;
        out_ledger_prev_hash := v_prev;
        out_ledger_hash := v_link;
        RETURN NEXT;
        v_prev := v_link;
    END LOOP;
    INSERT INTO evidence_auditevent SELECT * FROM jsonb_populate_recordset(NULL::evidence_auditevent, v_rows);
    UPDATE evidence_ledgerhead SET seq = v_seq, hash = v_prev WHERE id = 1;
END;
$$;
"""

DROP = "DROP FUNCTION IF EXISTS mandate_append_events(jsonb);"


def forwards(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(CREATE, params=None)


def backwards(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(DROP, params=None)


class Migration(migrations.Migration):
    dependencies = [("evidence", "0003_adminauditrecord_controlplaneauditrecord")]
    operations = [migrations.RunPython(forwards, backwards)]
