import pytest
from django.db import OperationalError


def test_healthz_answers_ok_without_auth(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "service": "mandate"}


@pytest.mark.django_db
def test_readyz_is_ready_with_a_boolean_per_dependency(client):
    response = client.get("/readyz")
    body = response.json()
    assert response.status_code == 200
    assert body["status"] == "ready"
    assert body["checks"]["database"] is True
    assert all(value is True for value in body["checks"].values())
    assert set(body["checks"]) in ({"database", "redis"}, {"database", "broker"})


@pytest.mark.django_db
def test_readyz_is_degraded_but_200_when_redis_is_unreachable(client, settings):
    settings.REDIS_URL = "redis://127.0.0.1:1/0"  # nothing listens on port 1
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.json() == {
        "status": "degraded",
        "service": "mandate",
        "checks": {"database": True, "redis": False},
    }


@pytest.mark.django_db
def test_readyz_is_503_not_ready_when_the_database_is_down(client, monkeypatch):
    from django.db import connections
    from django.db.backends.base.base import BaseDatabaseWrapper

    def refuse(*args, **kwargs):
        raise OperationalError("connection refused")

    monkeypatch.setattr(BaseDatabaseWrapper, "cursor", refuse)
    # A test that allowed no database (``databases=[]``) leaves ``cursor`` on the connection
    # itself when Django restores it, which would hide the class's.
    monkeypatch.setattr(connections["default"], "cursor", refuse)
    response = client.get("/readyz")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "not_ready"
    assert body["checks"]["database"] is False
