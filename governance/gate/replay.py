"""DPoP proof ids (``jti``) are single-use: the first use is remembered for ``REMEMBER_SECONDS``
(longer than a proof's ``iat`` window of 65 s, so a proof cannot outlive its record).

With ``REDIS_URL`` set: Redis ``SET NX EX``, shared by every process; when Redis does not
answer, requests fail closed (503 ``replay_cache_unavailable``), never pass unchecked. Without
Redis (the embedded default): the ``DpopReplay`` table, insert-or-fail on the primary key,
expired rows swept at most once a minute per process. Call it outside a transaction that may
roll back, or the record goes with it.
"""

import asyncio
import logging
import threading
import time
import weakref
from datetime import timedelta

import redis
import redis.asyncio
from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from governance.errors import GateError
from governance.gate.replay_wire import ReplayConnection, ReplyError, plain_target
from governance.models import DpopReplay

logger = logging.getLogger(__name__)

REMEMBER_SECONDS = 180
REDIS_KEY_PREFIX = "mandate:gate:dpop-jti:"
REDIS_TIMEOUT_SECONDS = 0.5
SWEEP_INTERVAL_SECONDS = 60.0

_client: redis.Redis | None = None
_client_url = ""
_client_lock = threading.Lock()
_last_sweep = 0.0


def _redis() -> redis.Redis:
    global _client, _client_url
    url = settings.REDIS_URL
    with _client_lock:
        if _client is None or _client_url != url:
            _client = redis.Redis.from_url(
                url, socket_timeout=REDIS_TIMEOUT_SECONDS, socket_connect_timeout=REDIS_TIMEOUT_SECONDS
            )
            _client_url = url
        return _client


_async_clients: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, tuple[str, redis.asyncio.Redis]]" = (
    weakref.WeakKeyDictionary()
)


def _redis_async() -> redis.asyncio.Redis:
    """The running loop's client (asyncio clients belong to one loop)."""
    loop = asyncio.get_running_loop()
    url = settings.REDIS_URL
    found = _async_clients.get(loop)
    if found is None or found[0] != url:
        client = redis.asyncio.Redis.from_url(
            url, socket_timeout=REDIS_TIMEOUT_SECONDS, socket_connect_timeout=REDIS_TIMEOUT_SECONDS
        )
        found = _async_clients[loop] = (url, client)
    return found[1]


def replayed() -> GateError:
    return GateError(401, "replay_detected")


def remember_proof(jti: str) -> None:
    """Record ``jti`` as used; ``GateError`` 401 ``replay_detected`` if it already was, 503
    ``replay_cache_unavailable`` if Redis is configured and down."""
    if settings.REDIS_URL:
        try:
            first = _redis().set(REDIS_KEY_PREFIX + jti, b"1", nx=True, ex=REMEMBER_SECONDS)
        except redis.RedisError as exc:
            logger.warning("gate: DPoP replay cache unreachable", extra={"error": str(exc)})
            raise GateError(503, "replay_cache_unavailable") from None
        if not first:
            raise replayed()
        return
    _remember_in_table(jti)


def remembers_without_blocking() -> bool:
    """Whether ``remember_proof_async`` can run on an event loop (Redis), or the check needs
    the database (the embedded default): then only ``remember_proof`` will do."""
    return bool(settings.REDIS_URL)


_replay_connections: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, tuple[str, ReplayConnection | None]]" = (
    weakref.WeakKeyDictionary()
)


def _replay_connection() -> ReplayConnection | None:
    """The running loop's pipelined connection (``replay_wire``) for a plain ``redis://`` URL;
    None for any other URL (redis-py's client checks then)."""
    loop = asyncio.get_running_loop()
    url = settings.REDIS_URL
    found = _replay_connections.get(loop)
    if found is None or found[0] != url:
        for closed in [other for other in _replay_connections if other.is_closed()]:
            del _replay_connections[closed]  # its connection refers to its loop: never collected otherwise
        target = plain_target(url)
        connection = ReplayConnection(target, REDIS_TIMEOUT_SECONDS) if target is not None else None
        found = _replay_connections[loop] = (url, connection)
    return found[1]


async def remember_proof_async(jti: str) -> None:
    """``remember_proof`` on the running loop, through Redis (``remembers_without_blocking``)."""
    key = REDIS_KEY_PREFIX + jti
    connection = _replay_connection()
    try:
        if connection is not None:
            first = await connection.set_once(key.encode(), REMEMBER_SECONDS)
        else:
            first = await _redis_async().set(key, b"1", nx=True, ex=REMEMBER_SECONDS)
    except (redis.RedisError, ReplyError, OSError, TimeoutError) as exc:
        logger.warning("gate: DPoP replay cache unreachable", extra={"error": str(exc)})
        raise GateError(503, "replay_cache_unavailable") from None
    if not first:
        raise replayed()


def _remember_in_table(jti: str) -> None:
    now = timezone.now()
    try:
        with transaction.atomic():
            DpopReplay.objects.create(jti=jti, expires_at=now + timedelta(seconds=REMEMBER_SECONDS))
    except IntegrityError:
        raise replayed() from None
    _sweep(now)


def _sweep(now) -> None:
    global _last_sweep
    if time.monotonic() - _last_sweep < SWEEP_INTERVAL_SECONDS:
        return
    _last_sweep = time.monotonic()
    DpopReplay.objects.filter(expires_at__lt=now).delete()
