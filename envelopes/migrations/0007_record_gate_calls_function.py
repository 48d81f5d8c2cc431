"""``mandate_record_gate_calls(receipts, executions, events, kid, active)``: the evidence of many
gate calls in one statement (Postgres only), the execute route's group-committed write
(``envelopes.gate.steps.recording.record_evidence``; docs/gate.md).

The rows come prepared (receipts signed, events hashed on their own chains). In one round
trip, and in autocommit its own transaction (no BEGIN and COMMIT of their own), it:

1. when there are receipts, checks that ``kid`` (the key that signed them) is still the
   active Ed25519 key, else answers false with nothing written (the caller reads the active
   key again, signs again and retries), as ``evidence.services.receipts.store_receipts`` does;
2. inserts the receipts, then the execution rows (``jsonb_populate_recordset``, all columns);
3. links the events into the ledger and inserts them last, with ``mandate_append_events``
   (evidence migration 0004), so the ledger head's lock is held only until this statement
   ends — no network round trip while it is held.

An error fails the whole statement; nothing of the batch is kept (the group commit then
writes each call alone).
"""

from django.db import migrations

from evidence.migration_ops import postgres_sql

CREATE = r"""
CREATE OR REPLACE FUNCTION mandate_record_gate_calls(
    p_receipts jsonb, p_executions jsonb, p_events jsonb, p_kid text, p_active text
) RETURNS boolean
LANGUAGE plpgsql AS $$
BEGIN
    IF jsonb_array_length(p_receipts) > 0 THEN
        PERFORM 1 FROM evidence_signingkey WHERE kid = p_kid AND status = p_active;
        IF NOT FOUND THEN
            RETURN false;
        END IF;
        INSERT INTO evidence_receipt
            SELECT * FROM jsonb_populate_recordset(NULL::evidence_receipt, p_receipts);
    END IF;
    IF jsonb_array_length(p_executions) > 0 THEN
        INSERT INTO envelopes_gateexecution
            SELECT * FROM jsonb_populate_recordset(NULL::envelopes_gateexecution, p_executions);
    END IF;
    IF jsonb_array_length(p_events) > 0 THEN
        PERFORM mandate_append_events(p_events);
    END IF;
    RETURN true;
END;
$$;
"""

DROP = "DROP FUNCTION IF EXISTS mandate_record_gate_calls(jsonb, jsonb, jsonb, text, text);"


class Migration(migrations.Migration):
    dependencies = [
        ("envelopes", "0006_gate"),
        ("evidence", "0008_receipt_id_without_pattern_index"),
    ]
    operations = [postgres_sql(CREATE, DROP)]
