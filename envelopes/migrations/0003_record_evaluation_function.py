"""``mandate_record_evaluation``: record one evaluation in one statement (Postgres only).

Called by ``envelopes.services.evaluation`` with the envelope row and its audit events,
computed in memory against a cached authority snapshot. In one round trip it:

1. checks the API token still stands (active, unexpired, same roles, its person active
   and in the envelope's organization), when the caller passes one (the fast route);
2. checks the organization's control-plane revision is the snapshot's, else answers
   ``stale`` without writing (the caller reloads the snapshot and decides again);
3. inserts the envelope, or answers ``duplicate`` with the stored request hash and
   response when (organization, request_source, request_id) is taken (idempotency);
4. appends the events through ``mandate_append_events`` (evidence migration 0004).
"""

from django.db import migrations

CREATE = r"""
CREATE OR REPLACE FUNCTION mandate_record_evaluation(
    p_envelope jsonb, p_events jsonb, p_revision bigint, p_token jsonb
) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    v_org uuid := (p_envelope->>'organization_id')::uuid;
    v_revision bigint;
    v_hash text;
    v_response jsonb;
BEGIN
    IF p_token IS NOT NULL THEN
        PERFORM 1 FROM governance_apitoken t JOIN governance_person p ON p.id = t.principal_id
        WHERE t.id = (p_token->>'id')::uuid
          AND t.status = 'active'
          AND t.roles = p_token->'roles'
          AND (t.expires_at IS NULL OR t.expires_at > now())
          AND p.is_active
          AND p.organization_id = v_org;
        IF NOT FOUND THEN
            RETURN '{"status": "unauthenticated"}'::jsonb;
        END IF;
    END IF;
    SELECT number INTO v_revision FROM controlplane_revision WHERE organization_id = v_org;
    IF coalesce(v_revision, 0) <> p_revision THEN
        RETURN jsonb_build_object('status', 'stale', 'revision', coalesce(v_revision, 0));
    END IF;
    INSERT INTO envelopes_envelope
        SELECT * FROM jsonb_populate_record(NULL::envelopes_envelope, p_envelope)
        ON CONFLICT (organization_id, request_source, request_id) DO NOTHING;
    IF NOT FOUND THEN
        SELECT submitted_hash, response INTO v_hash, v_response FROM envelopes_envelope
        WHERE organization_id = v_org
          AND request_source = p_envelope->>'request_source'
          AND request_id = p_envelope->>'request_id';
        RETURN jsonb_build_object('status', 'duplicate', 'submitted_hash', v_hash, 'response', v_response);
    END IF;
    PERFORM mandate_append_events(p_events);
    RETURN '{"status": "recorded"}'::jsonb;
END;
$$;
"""

DROP = "DROP FUNCTION IF EXISTS mandate_record_evaluation(jsonb, jsonb, bigint, jsonb);"


def forwards(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(CREATE, params=None)


def backwards(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(DROP, params=None)


class Migration(migrations.Migration):
    dependencies = [
        ("envelopes", "0002_approval_requests"),
        ("evidence", "0004_append_events_function"),
        ("controlplane", "0002_revision"),
        ("governance", "0001_initial"),
    ]
    operations = [migrations.RunPython(forwards, backwards)]
