"""The DPoP replay check on the hot path's event loop (``governance/gate/replay_wire.py``): one
pipelined connection to Redis per loop, each proof id accepted once, and every failure of
Redis — down, silent, killed, answering nonsense — a 503 ``replay_cache_unavailable``, never
a pass; the next check connects again."""

import asyncio
import time
import uuid

import pytest
from django.conf import settings as django_settings

from governance.errors import GateError
from governance.gate import replay
from governance.gate.replay_wire import plain_target
from tests.faults import redis_process


def checks(*jtis):
    """Each jti's outcome, checked all at once on one loop: True (first use), "replay" or the error code."""

    async def one(jti):
        try:
            await replay.remember_proof_async(jti)
        except GateError as refused:
            return "replay" if refused.code == "replay_detected" else refused.code
        return True

    async def all_of_them():
        return await asyncio.gather(*(one(jti) for jti in jtis))

    return asyncio.run(all_of_them())


class FakeRedis:
    """A server speaking just enough RESP: it records each command and answers with
    ``answer(command, connection_number)`` (None: no answer at all)."""

    def __init__(self, answer):
        self.answer = answer
        self.commands: list[tuple[int, list[bytes]]] = []
        self.connections = 0

    async def __aenter__(self):
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.url = f"redis://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"
        return self

    async def __aexit__(self, *exc):
        self.server.close()

    async def _serve(self, reader, writer):
        self.connections += 1
        number = self.connections
        try:
            while True:
                header = await reader.readline()
                if not header:
                    return
                parts = []
                for _ in range(int(header[1:])):
                    length = int((await reader.readline())[1:])
                    parts.append((await reader.readexactly(length + 2))[:-2])
                self.commands.append((number, parts))
                reply = self.answer(parts, number)
                if reply is not None:
                    writer.write(reply)
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        finally:
            writer.close()


async def remembered(jti):
    try:
        await replay.remember_proof_async(jti)
    except GateError as refused:
        return refused.code
    return "ok"


@pytest.mark.redis
def test_on_the_loop_a_proof_id_is_accepted_once_whatever_the_order_of_the_answers():
    if not plain_target(django_settings.REDIS_URL or ""):
        pytest.skip("needs a plain redis:// REDIS_URL")
    jtis = [str(uuid.uuid4()) for _ in range(12)]
    outcomes = checks(*jtis, *jtis[:6])
    assert outcomes[:12] == [True] * 12
    assert outcomes[12:] == ["replay"] * 6
    assert checks(*jtis[6:]) == ["replay"] * 6


def test_with_a_password_and_a_database_the_connection_authenticates_and_selects_first(settings):
    def answer(parts, _connection):
        if parts[0] == b"SET":
            return b"+OK\r\n" if parts[1].endswith(b"first") else b"$-1\r\n"
        return b"+OK\r\n"

    async def scenario():
        async with FakeRedis(answer) as redis:
            settings.REDIS_URL = redis.url.replace("redis://", "redis://agent:s3cret@") + "/5"
            outcomes = [await remembered("first"), await remembered("again")]
            return outcomes, redis.commands

    outcomes, commands = asyncio.run(scenario())
    assert outcomes == ["ok", "replay_detected"]
    assert commands == [
        (1, [b"AUTH", b"agent", b"s3cret"]),
        (1, [b"SELECT", b"5"]),
        (1, [b"SET", replay.REDIS_KEY_PREFIX.encode() + b"first", b"1", b"NX", b"EX", b"180"]),
        (1, [b"SET", replay.REDIS_KEY_PREFIX.encode() + b"again", b"1", b"NX", b"EX", b"180"]),
    ]


def test_a_wrong_password_fails_closed(settings):
    def answer(parts, _connection):
        return b"-WRONGPASS invalid username-password pair\r\n" if parts[0] == b"AUTH" else b"+OK\r\n"

    async def scenario():
        async with FakeRedis(answer) as redis:
            settings.REDIS_URL = redis.url.replace("redis://", "redis://:nope@")
            return await remembered("x"), [parts[0] for _, parts in redis.commands]

    assert asyncio.run(scenario()) == ("replay_cache_unavailable", [b"AUTH"])


def test_a_redis_that_stops_answering_fails_closed_in_time_and_the_next_check_connects_again(settings):
    def answer(parts, connection):
        return None if connection == 1 else b"+OK\r\n"  # the first connection hangs

    async def scenario():
        async with FakeRedis(answer) as redis:
            settings.REDIS_URL = redis.url
            started = time.monotonic()
            silent = await asyncio.gather(remembered("a"), remembered("b"))
            waited = time.monotonic() - started
            return silent, waited, await remembered("c"), redis.connections

    silent, waited, after, connections = asyncio.run(scenario())
    assert silent == ["replay_cache_unavailable"] * 2
    assert waited < replay.REDIS_TIMEOUT_SECONDS + 1
    assert (after, connections) == ("ok", 2)


def test_an_answer_a_set_cannot_give_fails_closed_and_the_connection_is_replaced(settings):
    def answer(parts, connection):
        return b":1\r\n" if connection == 1 else b"+OK\r\n"

    async def scenario():
        async with FakeRedis(answer) as redis:
            settings.REDIS_URL = redis.url
            return await remembered("a"), await remembered("b"), redis.connections

    assert asyncio.run(scenario()) == ("replay_cache_unavailable", "ok", 2)


def test_an_error_reply_fails_closed(settings):
    def answer(parts, _connection):
        return b"-MISCONF Redis is configured to save RDB snapshots\r\n"

    async def scenario():
        async with FakeRedis(answer) as redis:
            settings.REDIS_URL = redis.url
            return await remembered("a")

    assert asyncio.run(scenario()) == "replay_cache_unavailable"


def test_redis_killed_fails_the_checks_closed_and_when_it_is_back_they_pass_again(settings):
    with redis_process() as server:
        settings.REDIS_URL = server.url

        async def scenario():
            before = await remembered("before")
            server.kill()
            during = await remembered("during")
            server.start()
            for _ in range(50):  # until it listens again
                after = await remembered(f"after-{_}")
                if after == "ok":
                    break
                await asyncio.sleep(0.1)
            return before, during, after

        assert asyncio.run(scenario()) == ("ok", "replay_cache_unavailable", "ok")


@pytest.mark.parametrize(
    ("url", "plain"),
    [
        ("redis://127.0.0.1:6379/8", {"host": "127.0.0.1", "port": 6379, "db": 8}),
        ("redis://user:pw@cache", {"username": "user", "password": "pw", "host": "cache"}),
        ("rediss://cache:6380/0", None),
        ("unix:///run/redis.sock?db=1", None),
        ("redis://cache/3?socket_timeout=2", None),
        ("", None),
    ],
)
def test_only_plain_redis_urls_use_the_loops_own_connection(url, plain):
    assert plain_target(url) == plain
