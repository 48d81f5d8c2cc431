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


def test_evaluation_and_decisions_survive_redis_down(demo, make_person, settings, django_capture_on_commit_callbacks):
    """With the test's own Redis as cache and notification bus, killed: an evaluation and a
    decision still commit, with their evidence and outbox row, and nothing answers 500. (The
    broker stays the shared one: the broker-down case is tests/test_webhooks.py's.)"""
    import json

    from envelopes.models import ApprovalRequest, Delivery
    from envelopes.requests.channels import create_invite, register_channel
    from envelopes.requests.decisions import act
    from envelopes.requests.submissions import submit_request
    from evidence.services.verification import verify_chain
    from governance.choices import Role
    from governance.services.tokens import issue_token
    from tests.test_evaluate import payment

    configured = settings.CACHES["default"]
    with redis_process() as server:
        settings.CACHES = {"default": {**configured, "LOCATION": server.url}}
        settings.REDIS_URL = server.url
        operator = make_person(roles=(Role.PLATFORM_OPERATOR,), username="op")
        owner = make_person(username="owner")
        approver = make_person(roles=(Role.GOVERNANCE_APPROVER,), username="approver")
        _, invite = create_invite(owner)
        channel, _, _ = register_channel(invite)
        body = {"type": "approval_request", "title": "t", "return_webhook": "http://127.0.0.1:9/hook"}
        request = submit_request(channel, body, json.dumps(body))
        server.kill()

        _, secret = issue_token(operator, "t", [Role.PLATFORM_OPERATOR])
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
        evaluation = payment()
        started = time.monotonic()
        answered = client.post("/v1/evaluate", evaluation, format="json")
        assert answered.status_code == 200, answered.content
        assert verify_chain(answered.json()["envelope_id"]).valid

        with django_capture_on_commit_callbacks(execute=True):
            act(demo.pk, request.pk, approver, "approve")
        assert time.monotonic() - started < 10
        assert ApprovalRequest.objects.get(pk=request.pk).status == "approved"
        delivery = Delivery.objects.get(request_id=request.pk, event="decision")
        assert delivery.status == "pending" and delivery.attempts == 0  # the sweeper sends it later
        assert verify_chain(str(request.pk)).valid
