"""Liveness and readiness: what a load balancer or orchestrator probes."""

from django.conf import settings
from django.db import connection


def database_ready() -> bool:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            return cursor.fetchone()[0] == 1
    except Exception:  # any failure means not ready
        return False


def redis_ready(url: str) -> bool:
    import redis

    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=0.5, socket_timeout=0.5)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except Exception:  # any failure means not ready
        return False


def filesystem_broker_ready() -> bool:
    folder = settings.CELERY_BROKER_TRANSPORT_OPTIONS["data_folder_in"]
    import os

    try:
        os.makedirs(folder, exist_ok=True)
        return os.access(folder, os.W_OK)
    except OSError:
        return False


def readiness() -> tuple[int, dict]:
    checks = {"database": database_ready()}
    if settings.REDIS_URL:
        checks["redis"] = redis_ready(settings.REDIS_URL)
        broker_ok = checks["redis"]
    else:
        checks["broker"] = filesystem_broker_ready()
        broker_ok = checks["broker"]
    if not checks["database"]:
        return 503, {"status": "not_ready", "service": "mandate", "checks": checks}
    status = "ready" if broker_ok else "degraded"
    return 200, {"status": status, "service": "mandate", "checks": checks}
