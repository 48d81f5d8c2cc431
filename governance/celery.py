"""The Celery app. Workers and beat start with ``celery -A governance worker|beat``."""

import os
from pathlib import Path

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "governance.settings")

app = Celery("mandate")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
# envelopes keeps its tasks in its capability packages.
app.autodiscover_tasks(["envelopes.delivery", "envelopes.requests", "envelopes.gate"])


@app.on_configure.connect
def _prepare_filesystem_broker(sender, **kwargs):
    # The embedded broker keeps messages in folders that must exist before the first send.
    # (Read Django's settings: sender.conf is still being built while this signal runs.)
    from django.conf import settings

    options = getattr(settings, "CELERY_BROKER_TRANSPORT_OPTIONS", None) or {}
    for key in ("data_folder_in", "data_folder_out", "control_folder"):
        if options.get(key):
            Path(options[key]).mkdir(parents=True, exist_ok=True)
