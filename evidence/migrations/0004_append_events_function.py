"""``mandate_append_events(events jsonb)``: link events into the ledger and insert them, in
one statement (Postgres only; SQLite keeps the ORM path in ``evidence.services.chain``).

The caller computes each event's own hash (its subject chain needs no global state); the
function takes the ledger head's row lock, computes each ledger link exactly as
``evidence.canonical.ledger_hash`` does (RFC 8785 of three fields, SHA-256), inserts the
rows with one ``INSERT … SELECT`` and moves the head. The lock is therefore held for the
inserts and the commit only, never across a network round trip.
"""

from django.db import migrations

from evidence.migration_ops import postgres_sql

CREATE = r"""
CREATE OR REPLACE FUNCTION mandate_append_events(p_events jsonb)
RETURNS TABLE (out_ledger_seq bigint, out_ledger_prev_hash text, out_ledger_hash text)
LANGUAGE plpgsql AS $$
DECLARE
    v_seq bigint;
    v_prev text;
    v_hash text;
    v_link text;
    v_seqs bigint[] := '{}';
    v_prevs text[] := '{}';
    v_links text[] := '{}';
BEGIN
    SELECT seq, hash INTO v_seq, v_prev FROM evidence_ledgerhead WHERE id = 1 FOR UPDATE;
    IF NOT FOUND THEN
        INSERT INTO evidence_ledgerhead (id, seq, hash) VALUES (1, 0, '') ON CONFLICT (id) DO NOTHING;
        SELECT seq, hash INTO v_seq, v_prev FROM evidence_ledgerhead WHERE id = 1 FOR UPDATE;
    END IF;
    FOR v_hash IN SELECT value->>'hash' FROM jsonb_array_elements(p_events) LOOP
        IF v_hash IS NULL OR length(v_hash) <> 64 OR ltrim(v_hash, '0123456789abcdef') <> '' THEN
            RAISE EXCEPTION 'event hash must be 64 lowercase hex digits' USING ERRCODE = 'invalid_parameter_value';
        END IF;
        v_seq := v_seq + 1;
        v_link := encode(sha256(convert_to(
            '{"event_hash":"' || v_hash || '","ledger_prev_hash":"' || v_prev
            || '","ledger_seq":' || v_seq::text || '}', 'UTF8')), 'hex');
        v_seqs := array_append(v_seqs, v_seq);
        v_prevs := array_append(v_prevs, v_prev);
        v_links := array_append(v_links, v_link);
        v_prev := v_link;
    END LOOP;
    INSERT INTO evidence_auditevent (
        id, chain_id, sequence_no, event_type, performer_type, performer_id, payload, occurred_at,
        prev_hash, hash, ledger_seq, ledger_prev_hash, ledger_hash
    )
    SELECT e.id, e.chain_id, e.sequence_no, e.event_type, e.performer_type, e.performer_id, e.payload,
           e.occurred_at, e.prev_hash, e.hash, l.seq, l.prev, l.link
    FROM jsonb_populate_recordset(NULL::evidence_auditevent, p_events) WITH ORDINALITY AS e
    JOIN unnest(v_seqs, v_prevs, v_links) WITH ORDINALITY AS l(seq, prev, link, n) ON l.n = e.ordinality;
    UPDATE evidence_ledgerhead SET seq = v_seq, hash = v_prev WHERE id = 1;
    RETURN QUERY SELECT * FROM unnest(v_seqs, v_prevs, v_links);
END;
$$;
"""

DROP = "DROP FUNCTION IF EXISTS mandate_append_events(jsonb);"


class Migration(migrations.Migration):
    dependencies = [("evidence", "0003_adminauditrecord_controlplaneauditrecord")]
    operations = [postgres_sql(CREATE, DROP)]
