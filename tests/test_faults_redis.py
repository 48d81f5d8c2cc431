"""Redis down: every Redis-backed helper degrades explicitly, never a 500."""

import time

import pytest
from django.core.cache import cache
from rest_framework.test import APIClient

from governance.services.people import create_person
from tests.faults import redis_process

pytestmark = [pytest.mark.django_db, pytest.mark.redis]


@pytest.fixture
def redis_cache(settings):
    """The configured Redis cache, pointed at a Redis of the test's own."""
    configured = settings.CACHES["default"]
    if "redis" not in configured["BACKEND"].lower():
        pytest.skip("needs the Redis cache: set REDIS_URL")
    with redis_process() as server:
        settings.CACHES = {"default": {**configured, "LOCATION": server.url}}
        yield server


def login(username, password):
    return APIClient().post("/auth/login", {"username": username, "password": password}, format="json")


def test_login_works_while_redis_is_down(organization, redis_cache):
    create_person(organization, "ada", password="correct horse battery")
    assert login("ada", "correct horse battery").status_code == 200
    redis_cache.kill()
    started = time.monotonic()
    assert login("ada", "correct horse battery").status_code == 200
    assert login("ada", "wrong").status_code == 401
    assert time.monotonic() - started < 3  # one socket timeout, then Redis is skipped


def test_failed_sign_ins_are_still_limited_per_process_while_redis_is_down(organization, redis_cache, settings):
    settings.ACCOUNT_RATE_LIMITS = {"login_failed": "3/m/key"}
    create_person(organization, "bob", password="correct horse battery")
    redis_cache.kill()
    statuses = [login("bob", "wrong").status_code for _ in range(5)]
    assert statuses[:3] == [401, 401, 401]
    assert statuses[-1] == 429


def test_the_cache_answers_from_memory_while_redis_is_down_and_uses_redis_again_after(redis_cache, monkeypatch):
    import redis

    from governance import cache as degrading

    monkeypatch.setattr(degrading, "RETRY_AFTER_SECONDS", 0.2)
    cache.set("kept", "in redis")
    assert cache.get("kept") == "in redis"
    redis_cache.kill()
    assert cache.get("kept") is None  # out of reach, not an error
    cache.set("local", 1)
    assert cache.incr("local") == 2
    redis_cache.start()  # the same port again, empty
    time.sleep(0.25)
    cache.set("back", "in redis")
    assert redis.Redis.from_url(redis_cache.url).exists(cache.make_and_validate_key("back")) == 1
