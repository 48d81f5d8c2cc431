"""Agents' requests keep the TTL they were given (escalations re-read it instead of
re-parsing the submitted body), and ``submitted_hash`` means one thing for every envelope:
the SHA-256 of the RFC 8785 form of the submitted request (docs/evidence.md). Requests
stored before this hashed the raw bytes; their hashes are recomputed from the stored body.
"""

import json
from datetime import UTC, datetime

from django.db import migrations, models


def backfill(apps, schema_editor):
    from evidence.canonical import canonical_hash
    from evidence.services.chain import json_native

    ApprovalRequest = apps.get_model("envelopes", "ApprovalRequest")
    Envelope = apps.get_model("envelopes", "Envelope")
    # Through the migration's own connection: the owner's (DATABASE_MIGRATE_URL), whose
    # transaction holds the table it just altered.
    db = schema_editor.connection.alias
    for request in ApprovalRequest.objects.using(db).select_related("envelope").iterator(chunk_size=500):
        envelope = request.envelope
        try:
            body = json.loads(envelope.submitted_raw)
        except ValueError:
            continue
        Envelope.objects.using(db).filter(pk=envelope.pk).update(submitted_hash=canonical_hash(json_native(body)))
        submitted = body.get("expires_at") if isinstance(body, dict) else None
        if isinstance(submitted, str):
            try:
                expires_at = datetime.fromisoformat(submitted.strip().replace("Z", "+00:00")).astimezone(UTC)
            except ValueError:
                continue
            ApprovalRequest.objects.using(db).filter(pk=request.pk).update(ttl=expires_at - envelope.received_at)


class Migration(migrations.Migration):
    dependencies = [
        ("envelopes", "0004_leaner_indexes"),
        ("evidence", "0005_leaner_indexes"),
    ]

    operations = [
        migrations.AddField(
            model_name="approvalrequest",
            name="ttl",
            field=models.DurationField(
                blank=True,
                help_text="The time the agent gave people (expires_at − submission); each escalation gets it anew.",
                null=True,
            ),
        ),
        migrations.RunPython(backfill, migrations.RunPython.noop),
    ]
