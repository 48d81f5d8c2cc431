"""The record refuses its own app: TRUNCATE is refused on every evidence table, the audit
trails are append-only, and the application's role (MANDATE_TEST_APP_ROLE, the CI's
restricted pass) can append evidence but neither change it nor turn its guards off."""

import os
import subprocess
import sys

import pytest
from django.core.management import call_command
from django.db import DatabaseError, connection, transaction

from evidence.database_roles import EVIDENCE_TABLES, app_role_grants
from evidence.models import AdminAuditRecord, AuditEvent, ControlPlaneAuditRecord, LedgerHead
from evidence.services.audit_trails import record_admin_action, record_controlplane_change
from evidence.services.chain import append_event
from evidence.services.verification import verify_ledger

pytestmark = pytest.mark.django_db
APP_ROLE = os.environ.get("MANDATE_TEST_APP_ROLE", "")


def _refused(sql, params=()):
    with pytest.raises(DatabaseError) as refusal, transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(sql, params)
    return str(refusal.value)


@pytest.fixture
def record():
    event = append_event("record", "E", {"v": 1})
    trail = record_controlplane_change(
        organization_id=None, kind="Surface", resource_id="s", action="approve", actor="a"
    )
    admin = record_admin_action(organization_id=None, action="apply.invoked", actor_type="user", actor_id="alice")
    return event, trail, admin


@pytest.mark.postgres
def test_truncate_of_any_evidence_table_is_refused(record):
    for table in EVIDENCE_TABLES:
        assert _refused(f"TRUNCATE {table} CASCADE")
    assert AuditEvent.objects.count() == 1
    assert LedgerHead.objects.get().seq == 1
    assert ControlPlaneAuditRecord.objects.count() == AdminAuditRecord.objects.count() == 1


@pytest.mark.postgres
def test_audit_trails_refuse_update_and_delete(record):
    _, trail, admin = record
    for table, pk in (("evidence_controlplaneauditrecord", trail.pk), ("evidence_adminauditrecord", admin.pk)):
        assert _refused(f"UPDATE {table} SET details = '{{}}'::jsonb WHERE id = %s", [str(pk)])
        assert _refused(f"DELETE FROM {table} WHERE id = %s", [str(pk)])
    with pytest.raises(DatabaseError), transaction.atomic():
        AdminAuditRecord.objects.filter(pk=admin.pk).delete()
    assert AdminAuditRecord.objects.filter(pk=admin.pk).exists()


@pytest.mark.postgres
def test_the_ledger_head_moves_but_is_never_deleted(record):
    assert _refused("DELETE FROM evidence_ledgerhead")
    assert "only moves forward" in _refused("UPDATE evidence_ledgerhead SET id = 2")
    assert "only moves forward" in _refused("INSERT INTO evidence_ledgerhead (id, seq, hash) VALUES (2, 0, '')")
    if not APP_ROLE:  # the owner may move it (mandate_append_events does), but never back
        assert "only moves forward" in _refused("UPDATE evidence_ledgerhead SET seq = 0")
    append_event("record", "F", {"v": 2})
    assert LedgerHead.objects.get().seq == 2
    assert verify_ledger().valid


@pytest.mark.postgres
@pytest.mark.skipif(not APP_ROLE, reason="runs as the application's role: set MANDATE_TEST_APP_ROLE")
def test_the_app_role_appends_evidence_but_cannot_change_it_or_lift_its_guards(record):
    event, trail, _ = record
    with connection.cursor() as cursor:
        cursor.execute("SELECT current_user")
        assert cursor.fetchone() == (APP_ROLE,)
    pk = [str(event.pk)]
    for statement, params in (
        ("UPDATE evidence_auditevent SET event_type = 'X' WHERE id = %s", pk),
        ("DELETE FROM evidence_auditevent WHERE id = %s", pk),
        ("TRUNCATE evidence_auditevent", ()),
        ("UPDATE evidence_ledgerhead SET seq = seq + 1", ()),
        ("INSERT INTO evidence_auditevent SELECT * FROM evidence_auditevent WHERE false", ()),
        ("UPDATE evidence_controlplaneauditrecord SET actor = 'x' WHERE id = %s", [str(trail.pk)]),
    ):
        assert "permission denied" in _refused(statement, params)
    for guarded in EVIDENCE_TABLES:
        assert "must be owner" in _refused(f"ALTER TABLE {guarded} DISABLE TRIGGER USER")
    assert "permission denied" in _refused("SET session_replication_role = replica")
    # Appends go through mandate_append_events, which runs as the owner.
    append_event("record", "F", {"v": 2})
    assert AuditEvent.objects.filter(chain_id="record").count() == 2
    assert verify_ledger().valid


def test_grants_give_the_app_everything_but_the_record():
    statements = app_role_grants(owner="mandate_owner", app="mandate_app")
    assert 'GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA "public" TO "mandate_app"' in statements
    assert (
        'ALTER DEFAULT PRIVILEGES FOR ROLE "mandate_owner" IN SCHEMA "public" '
        'GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO "mandate_app"'
    ) in statements
    assert statements[-4:] == [
        "REVOKE ALL ON evidence_auditevent, evidence_ledgerhead, evidence_controlplaneauditrecord, "
        'evidence_adminauditrecord, evidence_receipt FROM "mandate_app"',
        'GRANT SELECT ON evidence_auditevent, evidence_ledgerhead TO "mandate_app"',
        'GRANT INSERT, UPDATE (id) ON evidence_ledgerhead TO "mandate_app"',
        "GRANT SELECT, INSERT ON evidence_controlplaneauditrecord, evidence_adminauditrecord, evidence_receipt "
        'TO "mandate_app"',
    ]
    assert app_role_grants(owner='o"x', app="a")[0] == 'GRANT USAGE ON SCHEMA "public" TO "a"'
    assert '"o""x"' in app_role_grants(owner='o"x', app="a")[4]


@pytest.mark.postgres
def test_grant_app_role_prints_the_statements_it_runs(capsys):
    call_command("grant_app_role", "mandate_app", "--sql")
    printed = capsys.readouterr().out
    assert printed.startswith('GRANT USAGE ON SCHEMA "public" TO "mandate_app";')
    assert 'GRANT SELECT ON evidence_auditevent, evidence_ledgerhead TO "mandate_app";' in printed


def test_migrations_connect_through_database_migrate_url_when_set():
    probe = (
        "import django; django.setup(); from django.conf import settings as s; "
        "from django.core.management import load_command_class; "
        "m = load_command_class('governance', 'migrate').create_parser('manage.py', 'migrate'); "
        "print(s.MANDATE_OWNER_DATABASE, s.DATABASES['migrate']['USER'], s.DATABASES['migrate']['NAME'], "
        "m.parse_args([]).database)"
    )
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "governance.settings",
        "SECRET_KEY": "probe",
        "DATABASE_URL": "postgres://mandate_app@127.0.0.1:5432/mandate",
        "DATABASE_MIGRATE_URL": "postgres://mandate_owner@127.0.0.1:5432/mandate",
    }
    out = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True).stdout
    assert out.split() == ["migrate", "mandate_owner", "mandate", "migrate"]
