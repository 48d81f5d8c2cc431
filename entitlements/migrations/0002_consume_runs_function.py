"""``mandate_consume_runs(items jsonb, now timestamptz, stamp text)``: consume runs for many
run_ids in one statement and one commit (Postgres only), the group-committed write of the hot
path's consume (``entitlements.services.consumption``; docs/entitlements.md "The hot path").

Per item (``{"run", "token", "principal_name", "chain_id", "event_id", "performer_type"}``), what
``entitlements.services.runs.consume`` does, each item's outcome its own:

1. the API token still stands (active, unexpired, same roles, its person active, in the run's
   organization, with the email or username the principal was made from), else
   ``unauthenticated``;
2. the holder's usable balance: runs left, not expired at ``now``, earliest expiry first;
   none: ``exhausted``;
3. the run is inserted (``run`` is the row by column; the balance's id is filled in); its
   (organization, principal, run_id) taken: ``conflict``;
4. the balance is decremented if it still has a run and is not expired; if a parallel consume
   took the last one, the run just inserted is deleted again: ``exhausted``.

An item refused at any step leaves nothing written. 402 and 409 are outcomes, not errors, so
no subtransaction is needed; an unexpected error fails the statement, and the group commit
writes each item alone. Items are taken in (organization, principal, run_id) order, so
parallel batches lock runs and balances in one order (the order ``consume`` takes them:
the run, then its balance).

Then, if any run was consumed, it takes the ledger head's row lock and reads the tail of each
such run's chain, which may already hold a ``GBX_RUN_CHECKED`` (nothing else can append to
it until the commit), and appends each run's ``GBX_RUN_CONSUMED`` after it with
``mandate_append_events`` (evidence migration 0004). The event is the one
``runs.consume`` records (``entitlements.services.evidence.record_run_step``): its payload
``{run_id, principal, entitlement_id, runs_remaining}``, performed by the holder, at ``now``
(``stamp`` is ``now`` as hashed); its hash is ``evidence.canonical.event_hash``, written here
field by field in RFC 8785's key order as that function does (``to_jsonb(text)::text``
escapes a string exactly as JCS does; tests/test_entitlements_hot_consume.py compares both).
"""

from django.db import migrations

from evidence.migration_ops import postgres_sql

CREATE = r"""
CREATE OR REPLACE FUNCTION mandate_consume_runs(p_items jsonb, p_now timestamptz, p_stamp text)
RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    v_item jsonb;
    v_run jsonb;
    v_token jsonb;
    v_n integer;
    v_org uuid;
    v_balance uuid;
    v_entitlement_id text;
    v_remaining bigint;
    v_sequence_no bigint;
    v_prev text;
    v_principal text;
    v_payload text;
    v_hash text;
    v_results jsonb[] := array_fill(NULL::jsonb, ARRAY[jsonb_array_length(p_items)]);
    v_consumed integer[] := '{}';
    v_events jsonb[] := '{}';
BEGIN
    FOR v_item, v_n IN
        SELECT value, ordinality FROM jsonb_array_elements(p_items) WITH ORDINALITY
        ORDER BY value->'run'->>'organization_id', value->'run'->>'principal', value->'run'->>'run_id'
    LOOP
        v_run := v_item->'run';
        v_token := v_item->'token';
        v_org := (v_run->>'organization_id')::uuid;
        PERFORM 1 FROM governance_apitoken t
        WHERE t.id = (v_token->>'id')::uuid
          AND t.status = 'active'
          AND t.roles = v_token->'roles'
          AND (t.expires_at IS NULL OR t.expires_at > now())
          AND EXISTS (
              SELECT 1 FROM governance_person p
              WHERE p.id = t.principal_id
                AND p.is_active
                AND p.organization_id = v_org
                AND coalesce(nullif(p.email, ''), p.username) = v_item->>'principal_name'
          );
        IF NOT FOUND THEN
            v_results[v_n] := '{"status": "unauthenticated"}';
            CONTINUE;
        END IF;
        SELECT e.id, e.entitlement_id INTO v_balance, v_entitlement_id FROM entitlements_entitlement e
        WHERE e.organization_id = v_org
          AND e.kind = 'runs'
          AND e.principal = v_run->>'principal'
          AND e.runs_remaining > 0
          AND (e.expires_at IS NULL OR e.expires_at > p_now)
        ORDER BY e.expires_at ASC NULLS LAST, e.created_at
        LIMIT 1;
        IF NOT FOUND THEN
            v_results[v_n] := '{"status": "exhausted"}';
            CONTINUE;
        END IF;
        INSERT INTO entitlements_run
            SELECT * FROM jsonb_populate_record(
                NULL::entitlements_run, v_run || jsonb_build_object('entitlement_id', v_balance))
            ON CONFLICT (organization_id, principal, run_id) DO NOTHING;
        IF NOT FOUND THEN
            v_results[v_n] := '{"status": "conflict"}';
            CONTINUE;
        END IF;
        UPDATE entitlements_entitlement
        SET runs_remaining = runs_remaining - 1, updated_at = p_now
        WHERE id = v_balance AND runs_remaining > 0 AND (expires_at IS NULL OR expires_at > p_now)
        RETURNING runs_remaining INTO v_remaining;
        IF NOT FOUND THEN
            DELETE FROM entitlements_run WHERE id = (v_run->>'id')::uuid;
            v_results[v_n] := '{"status": "exhausted"}';
            CONTINUE;
        END IF;
        v_consumed := array_append(v_consumed, v_n);
        v_results[v_n] := jsonb_build_object(
            'status', 'consumed', 'entitlement_id', v_entitlement_id, 'runs_remaining', v_remaining);
    END LOOP;
    IF cardinality(v_consumed) = 0 THEN
        RETURN to_jsonb(v_results);
    END IF;

    PERFORM 1 FROM evidence_ledgerhead WHERE id = 1 FOR UPDATE;
    IF NOT FOUND THEN
        INSERT INTO evidence_ledgerhead (id, seq, hash) VALUES (1, 0, '') ON CONFLICT (id) DO NOTHING;
        PERFORM 1 FROM evidence_ledgerhead WHERE id = 1 FOR UPDATE;
    END IF;
    FOREACH v_n IN ARRAY v_consumed LOOP
        v_item := p_items->(v_n - 1);
        v_run := v_item->'run';
        v_principal := v_run->>'principal';
        SELECT a.sequence_no, a.hash INTO v_sequence_no, v_prev FROM evidence_auditevent a
        WHERE a.chain_id = v_item->>'chain_id'
        ORDER BY a.sequence_no DESC
        LIMIT 1;
        IF NOT FOUND THEN
            v_sequence_no := 0;
            v_prev := '';
        END IF;
        v_sequence_no := v_sequence_no + 1;
        v_payload := '{"entitlement_id":' || to_jsonb(v_results[v_n]->>'entitlement_id')::text
            || ',"principal":' || to_jsonb(v_principal)::text
            || ',"run_id":' || to_jsonb(v_run->>'run_id')::text
            || ',"runs_remaining":' || (v_results[v_n]->>'runs_remaining') || '}';
        v_hash := encode(sha256(convert_to(
            '{"chain_id":' || to_jsonb(v_item->>'chain_id')::text
            || ',"event_type":"GBX_RUN_CONSUMED","occurred_at":' || to_jsonb(p_stamp)::text
            || ',"payload":' || v_payload
            || ',"performer_id":' || to_jsonb(v_principal)::text
            || ',"performer_type":' || to_jsonb(v_item->>'performer_type')::text
            || ',"prev_hash":' || to_jsonb(v_prev)::text
            || ',"sequence_no":' || v_sequence_no::text || '}', 'UTF8')), 'hex');
        v_events := array_append(v_events, jsonb_build_object(
            'id', v_item->>'event_id',
            'chain_id', v_item->>'chain_id',
            'sequence_no', v_sequence_no,
            'event_type', 'GBX_RUN_CONSUMED',
            'performer_type', v_item->>'performer_type',
            'performer_id', v_principal,
            'payload', v_payload::jsonb,
            'occurred_at', p_now,
            'prev_hash', v_prev,
            'hash', v_hash));
    END LOOP;
    PERFORM mandate_append_events(to_jsonb(v_events));
    RETURN to_jsonb(v_results);
END;
$$;
"""

DROP = "DROP FUNCTION IF EXISTS mandate_consume_runs(jsonb, timestamptz, text);"


class Migration(migrations.Migration):
    dependencies = [
        ("entitlements", "0001_initial"),
        ("evidence", "0004_append_events_function"),
        ("governance", "0002_gate"),
    ]
    operations = [postgres_sql(CREATE, DROP)]
