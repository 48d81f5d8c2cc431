import os

import pytest
from django.db import connection
from rest_framework.test import APIClient

from governance.choices import Role
from governance.services.people import create_person, ensure_organization
from governance.services.tokens import issue_token
from tests.gbx import gbx  # noqa: F401  (a fixture for every test module)
from tests.oidc_issuer import oidc_issuer  # noqa: F401  (a fixture for every test module)


def pytest_collection_modifyitems(config, items):
    from django.conf import settings

    on_postgres = settings.DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql"
    skip = pytest.mark.skip(reason="needs PostgreSQL: set DATABASE_URL")
    for item in items:
        if "postgres" in item.keywords and not on_postgres:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _fresh_gate_caches():
    """The gate's per-process caches (state, verified leases) outlive each test's rollback."""
    from tests.gate_client import reset_gate_caches

    reset_gate_caches()
    yield
    reset_gate_caches()


@pytest.fixture
def organization(db):
    return ensure_organization("acme", "Acme")


@pytest.fixture
def demo(organization):
    """The organization with the demo bundle declared and active."""
    from tests.factories import declare_demo_authority

    return declare_demo_authority(organization)


@pytest.fixture
def make_person(organization):
    counter = {"n": 0}

    def make(roles=(), username=None, **fields):
        counter["n"] += 1
        return create_person(organization, username or f"person{counter['n']}", roles=roles, **fields)

    return make


@pytest.fixture
def make_token(make_person):
    def make(*roles, person=None):
        person = person or make_person(roles=roles)
        token, secret = issue_token(person, "test", roles)
        return secret

    return make


@pytest.fixture
def api_client():
    return APIClient()


@pytest.fixture
def client_with(make_token):
    """An API client authenticated with a fresh token carrying ``roles``."""

    def make(*roles):
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {make_token(*roles)}")
        return client

    return make


@pytest.fixture
def admin_client_api(client_with):
    return client_with(Role.PLATFORM_ADMIN)


@pytest.fixture
def django_requests():
    """Requests that reached Django (its request_started signal), for the ASGI routes that
    answer in front of it."""
    from django.core.signals import request_started

    seen = []

    def receiver(sender, scope=None, environ=None, **kwargs):
        seen.append((scope or {}).get("path") or (environ or {}).get("PATH_INFO"))

    request_started.connect(receiver)
    yield seen
    request_started.disconnect(receiver)


def is_postgres() -> bool:
    return connection.vendor == "postgresql"


@pytest.fixture(scope="session")
def django_db_setup(django_db_setup, django_db_blocker):
    """Created and migrated by the login role (the schema's owner); then, with
    MANDATE_TEST_APP_ROLE, every test runs as the application's role (docs/deployment.md)."""
    from django.db.backends.postgresql.operations import DatabaseOperations

    from tests.database_roles import flush_as_owner, run_as_app_role

    if connection.vendor != "postgresql":
        yield
        return
    role = os.environ.get("MANDATE_TEST_APP_ROLE", "")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(DatabaseOperations, "sql_flush", flush_as_owner(DatabaseOperations.sql_flush))
        if role:
            with django_db_blocker.unblock():
                run_as_app_role(role)
        yield
        if role:
            with django_db_blocker.unblock():
                run_as_app_role(None)


@pytest.fixture(scope="session", autouse=True)
def _close_connection_pools(django_db_setup, django_db_blocker):
    """Pooled connections would keep the test database busy when it is dropped."""
    yield
    from django.db import connections

    with django_db_blocker.unblock():
        for conn in connections.all():
            if hasattr(conn, "close_pool"):
                conn.close_pool()
