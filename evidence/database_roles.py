"""What the application's database role may do, as SQL its owner runs (docs/deployment.md).

The app role reads and writes every table of the schema except the record: it reads audit
events and appends them only through ``mandate_append_events``, which runs as the owner
(evidence migration 0006); it may lock the ledger head (``SELECT ... FOR UPDATE`` needs
UPDATE on one column: ``id``, which a trigger never lets change) and insert its genesis row,
never move it; it reads and inserts the audit trails and the gate's receipts, never changes
them. It owns nothing,
so it can neither TRUNCATE nor disable a trigger.
"""

LEDGER_TABLES = ("evidence_auditevent", "evidence_ledgerhead")
# Append-only audit trails and the gate's receipts: the app inserts and reads them.
TRAIL_TABLES = ("evidence_controlplaneauditrecord", "evidence_adminauditrecord", "evidence_receipt")
EVIDENCE_TABLES = LEDGER_TABLES + TRAIL_TABLES

APP_TABLE_PRIVILEGES = "SELECT, INSERT, UPDATE, DELETE"


def quote_identifier(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def app_role_grants(*, owner: str, app: str, schema: str = "public") -> list[str]:
    """Statements, run as ``owner``, that give ``app`` its privileges on the tables,
    sequences and functions that exist now and on those later migrations create. Idempotent."""
    owner, app, schema = (quote_identifier(name) for name in (owner, app, schema))
    defaults = f"ALTER DEFAULT PRIVILEGES FOR ROLE {owner} IN SCHEMA {schema} GRANT"
    ledger = ", ".join(LEDGER_TABLES)
    trails = ", ".join(TRAIL_TABLES)
    return [
        f"GRANT USAGE ON SCHEMA {schema} TO {app}",
        f"GRANT {APP_TABLE_PRIVILEGES} ON ALL TABLES IN SCHEMA {schema} TO {app}",
        f"GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA {schema} TO {app}",
        f"GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA {schema} TO {app}",
        f"{defaults} {APP_TABLE_PRIVILEGES} ON TABLES TO {app}",
        f"{defaults} USAGE, SELECT ON SEQUENCES TO {app}",
        f"{defaults} EXECUTE ON FUNCTIONS TO {app}",
        f"REVOKE ALL ON {ledger}, {trails} FROM {app}",
        f"GRANT SELECT ON {ledger} TO {app}",
        f"GRANT INSERT, UPDATE (id) ON evidence_ledgerhead TO {app}",
        f"GRANT SELECT, INSERT ON {trails} TO {app}",
    ]
