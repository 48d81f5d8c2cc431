"""``mandate_record_evaluations(items jsonb)``: record evaluations in one statement and one
commit (Postgres only); ``mandate_record_evaluation`` is its one-item case.

Called by ``envelopes.services.evaluation`` with each envelope row and its audit events,
computed in memory against a cached authority snapshot. In one round trip, for each item
(``{"envelope", "events", "revision", "token"}``), it:

1. checks the API token still stands (active, unexpired, same roles, its person active
   and in the envelope's organization), when the item carries one (the fast route), else
   answers ``unauthenticated`` for it;
2. checks the organization's control-plane revision is the snapshot's, else answers
   ``stale`` for it without writing (the caller reloads the snapshot and decides again);
3. inserts the envelope, or answers ``duplicate`` with the stored request hash and
   response when (organization, request_source, request_id) is taken (idempotency);
4. queues its events; the recorded items' events are then linked into the ledger and
   inserted by one ``mandate_append_events`` call (evidence migration 0004), so the
   ledger lock is taken once per statement.
"""

from django.db import migrations

from evidence.migration_ops import postgres_sql

CREATE = r"""
CREATE OR REPLACE FUNCTION mandate_record_evaluations(p_items jsonb) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    v_item jsonb;
    v_envelope jsonb;
    v_token jsonb;
    v_org uuid;
    v_revision bigint;
    v_hash text;
    v_response jsonb;
    v_position integer := 0;
    v_recorded integer[] := '{}';
    v_results jsonb[] := '{}';
    v_events jsonb;
BEGIN
    FOR v_item IN SELECT value FROM jsonb_array_elements(p_items) LOOP
        v_position := v_position + 1;
        v_envelope := v_item->'envelope';
        v_token := v_item->'token';
        v_org := (v_envelope->>'organization_id')::uuid;
        IF jsonb_typeof(v_token) = 'object' THEN
            PERFORM 1 FROM governance_apitoken t JOIN governance_person p ON p.id = t.principal_id
            WHERE t.id = (v_token->>'id')::uuid
              AND t.status = 'active'
              AND t.roles = v_token->'roles'
              AND (t.expires_at IS NULL OR t.expires_at > now())
              AND p.is_active
              AND p.organization_id = v_org;
            IF NOT FOUND THEN
                v_results := array_append(v_results, '{"status": "unauthenticated"}'::jsonb);
                CONTINUE;
            END IF;
        END IF;
        SELECT number INTO v_revision FROM controlplane_revision WHERE organization_id = v_org;
        IF coalesce(v_revision, 0) <> (v_item->>'revision')::bigint THEN
            v_results := array_append(v_results,
                jsonb_build_object('status', 'stale', 'revision', coalesce(v_revision, 0)));
            CONTINUE;
        END IF;
        INSERT INTO envelopes_envelope
            SELECT * FROM jsonb_populate_record(NULL::envelopes_envelope, v_envelope)
            ON CONFLICT (organization_id, request_source, request_id) DO NOTHING;
        IF NOT FOUND THEN
            SELECT submitted_hash, response INTO v_hash, v_response FROM envelopes_envelope
            WHERE organization_id = v_org
              AND request_source = v_envelope->>'request_source'
              AND request_id = v_envelope->>'request_id';
            v_results := array_append(v_results, jsonb_build_object(
                'status', 'duplicate', 'submitted_hash', v_hash, 'response', v_response));
            CONTINUE;
        END IF;
        v_recorded := array_append(v_recorded, v_position);
        v_results := array_append(v_results, '{"status": "recorded"}'::jsonb);
    END LOOP;
    IF cardinality(v_recorded) > 0 THEN
        SELECT jsonb_agg(e.value ORDER BY i.n, e.n) INTO v_events
        FROM jsonb_array_elements(p_items) WITH ORDINALITY AS i(item, n),
             jsonb_array_elements(i.item->'events') WITH ORDINALITY AS e(value, n)
        WHERE i.n = ANY(v_recorded);
        PERFORM mandate_append_events(v_events);
    END IF;
    RETURN to_jsonb(v_results);
END;
$$;

CREATE OR REPLACE FUNCTION mandate_record_evaluation(
    p_envelope jsonb, p_events jsonb, p_revision bigint, p_token jsonb
) RETURNS jsonb
LANGUAGE sql AS $$
    SELECT mandate_record_evaluations(jsonb_build_array(jsonb_build_object(
        'envelope', p_envelope, 'events', p_events, 'revision', p_revision, 'token', p_token))) -> 0;
$$;
"""


DROP = """
DROP FUNCTION IF EXISTS mandate_record_evaluation(jsonb, jsonb, bigint, jsonb);
DROP FUNCTION IF EXISTS mandate_record_evaluations(jsonb);
"""


class Migration(migrations.Migration):
    dependencies = [
        ("envelopes", "0002_approval_requests"),
        ("evidence", "0004_append_events_function"),
        ("controlplane", "0002_revision"),
        ("governance", "0001_initial"),
    ]
    operations = [postgres_sql(CREATE, DROP)]
