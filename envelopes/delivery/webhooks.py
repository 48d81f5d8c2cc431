"""Sending the webhook outbox: claim a due delivery, sign it, POST it to the vetted address,
record what happened, schedule the retry. Also the sweeper and the admins' replay.

Exclusivity: a worker owns an attempt by a conditional UPDATE (pending, due) that counts the
attempt and moves ``next_attempt_at`` a lease into the future, so a second task for the same
row (a duplicate message, the sweeper, a replayed task) finds nothing due and stops. The
outcome is written only while the row still shows that attempt. A worker killed mid-send
leaves the row pending; once the lease and the sweeper's grace have passed, the sweeper
re-enqueues it. Delivery is therefore at least once: receivers de-duplicate on
``X-AIGOS-Delivery`` / ``webhook-id`` (the delivery id, the same on every attempt).

Secrets and signatures are never logged.
"""

import base64
import contextlib
import hashlib
import hmac
import http.client
import logging
import os
import socket
import ssl
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import timedelta
from functools import cache

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from envelopes.choices import DeliveryStatus
from envelopes.delivery import outbox
from envelopes.models import Channel, Delivery
from evidence.encryption import decrypt_at_rest
from governance.network import Target, TargetRefused, vet_webhook_url

logger = logging.getLogger(__name__)

DEFAULT_RETRY_SCHEDULE = (60, 300, 900, 3600, 21600)  # 1m, 5m, 15m, 1h, 6h, then failed
DEFAULT_TIMEOUT_SECONDS = 10.0
DEFAULT_SWEEP_GRACE_SECONDS = 60.0
USER_AGENT = "Mandate-Webhooks/1"
EXCERPT_CHARS = 500
SWEEP_BATCH = 500


def retry_schedule() -> tuple[float, ...]:
    """Delays before the 2nd, 3rd… attempts (MANDATE_WEBHOOK_RETRY_SCHEDULE, seconds)."""
    return tuple(float(s) for s in getattr(settings, "MANDATE_WEBHOOK_RETRY_SCHEDULE", DEFAULT_RETRY_SCHEDULE))


def timeout_seconds() -> float:
    return float(getattr(settings, "MANDATE_WEBHOOK_TIMEOUT_SECONDS", DEFAULT_TIMEOUT_SECONDS))


def lease() -> timedelta:
    """How long a claimed attempt keeps its row: an attempt (DNS, then connect, send and read
    within the timeout) ends well within it; only then may another worker claim the row."""
    return timedelta(seconds=max(120.0, 2 * timeout_seconds() + 60))


def sweep_grace() -> timedelta:
    return timedelta(
        seconds=float(getattr(settings, "MANDATE_WEBHOOK_SWEEP_GRACE_SECONDS", DEFAULT_SWEEP_GRACE_SECONDS))
    )


# --- signing ---------------------------------------------------------------------------------


def aigos_signature(body: bytes, secret: str) -> str:
    """AIOS Govern: hex HMAC-SHA256 of the raw body, keyed with the secret string itself."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def standard_signature(delivery_id: str, timestamp: int, body: bytes, secret: str) -> str:
    """Standard Webhooks: base64 HMAC-SHA256 of ``id.timestamp.body``, keyed with the secret's
    bytes (base64 after ``whsec_``). Unlike AIOS's, it covers the timestamp (replays)."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{delivery_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


def signed_headers(delivery_id: str, body: bytes, secret: str, timestamp: int) -> dict[str, str]:
    return {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        "X-AIGOS-Signature": aigos_signature(body, secret),
        "X-AIGOS-Timestamp": str(timestamp),
        "X-AIGOS-Delivery": delivery_id,
        "webhook-id": delivery_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": standard_signature(delivery_id, timestamp, body, secret),
    }


# --- the HTTP client: connects to the vetted address only -----------------------------------


class _PinnedConnection(http.client.HTTPConnection):
    """Connects to ``address`` (vetted at delivery time) while the Host header names the
    URL's host; resolving the name again here could reach a different, unvetted address."""

    def __init__(self, host, port, *, address, timeout):
        super().__init__(host, port, timeout=timeout)
        self._create_connection = lambda _where, *args: socket.create_connection((address, port), *args)


class _PinnedTLSConnection(http.client.HTTPSConnection):
    """As above, over TLS: SNI and certificate checks use the URL's host name."""

    def __init__(self, host, port, *, address, timeout):
        super().__init__(host, port, timeout=timeout, context=_tls_context())
        self._create_connection = lambda _where, *args: socket.create_connection((address, port), *args)


@cache
def _tls_context() -> ssl.SSLContext:
    return ssl.create_default_context()


@dataclass(frozen=True)
class Answer:
    status: int
    excerpt: str


class SendFailed(Exception):
    pass


def post(target: Target, headers: dict[str, str], body: bytes, timeout: float) -> Answer:
    """POST ``body`` to the target's vetted address; the whole exchange ends within ``timeout``
    (the watchdog closes a connection that trickles). Redirects are not followed."""
    kind = _PinnedTLSConnection if target.scheme == "https" else _PinnedConnection
    connection = kind(target.host, target.port, address=target.address, timeout=timeout)
    deadline = time.monotonic() + timeout
    _watchdog.watch(connection, deadline)
    try:
        connection.request("POST", target.path, body=body, headers=headers)
        response = connection.getresponse()
        chunk = response.read(EXCERPT_CHARS * 4)
        return Answer(response.status, chunk.decode("utf-8", "replace")[:EXCERPT_CHARS])
    except (OSError, http.client.HTTPException, ValueError) as exc:
        if isinstance(exc, TimeoutError) or time.monotonic() >= deadline:
            raise SendFailed(f"timed out after {timeout:g} s") from exc
        raise SendFailed(f"connection failed: {type(exc).__name__}: {exc}"[:EXCERPT_CHARS]) from exc
    finally:
        _watchdog.release(connection)
        connection.close()


class _Watchdog:
    """Shuts down connections still open at their deadline (socket timeouts bound each read,
    not a receiver that trickles). One thread per process, started on first use and again
    in a forked worker process; cheaper than a timer thread per request."""

    def __init__(self):
        self._reset()
        os.register_at_fork(after_in_child=self._reset)

    def _reset(self):
        self._condition = threading.Condition()
        self._watched: dict[int, tuple[float, http.client.HTTPConnection]] = {}
        self._thread: threading.Thread | None = None

    def watch(self, connection: http.client.HTTPConnection, deadline: float) -> None:
        with self._condition:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="webhook-watchdog", daemon=True)
                self._thread.start()
            earliest = min((d for d, _ in self._watched.values()), default=None)
            self._watched[id(connection)] = (deadline, connection)
            if earliest is None or deadline < earliest:
                self._condition.notify()

    def release(self, connection: http.client.HTTPConnection) -> None:
        with self._condition:
            self._watched.pop(id(connection), None)

    def _run(self) -> None:
        with self._condition:
            while True:
                now = time.monotonic()
                for key, (deadline, connection) in list(self._watched.items()):
                    if deadline <= now:
                        del self._watched[key]
                        _cut(connection)
                earliest = min((d for d, _ in self._watched.values()), default=None)
                self._condition.wait(None if earliest is None else earliest - now)


def _cut(connection: http.client.HTTPConnection) -> None:
    sock = connection.sock
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)


_watchdog = _Watchdog()


# --- one attempt ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Attempt:
    """One claimed attempt: what sending needs, read in the claim's round trip."""

    delivery_id: uuid.UUID
    channel_id: uuid.UUID
    event: str
    url: str
    body: str
    number: int  # 1 for the first attempt
    secret_encrypted: str
    webhook_disabled: bool


def claim(delivery_id) -> Attempt | None:
    """Take the delivery's next attempt if it is pending and due; None when another worker
    has it, it is not due yet, or it is settled. One statement (the hot path of every
    delivery): count the attempt, push ``next_attempt_at`` a lease ahead, and return the
    row with its channel's secret and webhook switch."""
    try:
        pk = uuid.UUID(str(delivery_id))
    except ValueError:
        return None
    now = timezone.now()
    deliveries, channels = Delivery._meta.db_table, Channel._meta.db_table
    sql = f"""
        UPDATE {deliveries} SET attempts = attempts + 1, last_attempt_at = %s, next_attempt_at = %s
        WHERE id = %s AND status = %s AND next_attempt_at <= %s
        RETURNING id, channel_id, event, url, body, attempts,
            (SELECT webhook_secret_encrypted FROM {channels} c WHERE c.id = {deliveries}.channel_id),
            (SELECT webhook_disabled FROM {channels} c WHERE c.id = {deliveries}.channel_id)
    """  # noqa: S608 (table names from the models; values are parameters)
    ops, key = connection.ops, Delivery._meta.pk
    params = [
        ops.adapt_datetimefield_value(now),
        ops.adapt_datetimefield_value(now + lease()),
        key.get_db_prep_value(pk, connection),
        DeliveryStatus.PENDING.value,
        ops.adapt_datetimefield_value(now),
    ]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        row = cursor.fetchone()
    if row is None:
        return None
    return Attempt(key.to_python(row[0]), key.to_python(row[1]), row[2], row[3], row[4], row[5], row[6], bool(row[7]))


def _settle(attempt: Attempt, **fields) -> bool:
    """Write the attempt's outcome, unless the row moved on (replayed, re-claimed). Plain SQL
    like the claim: building the ORM query cost more CPU than the rest of the attempt."""
    meta = Delivery._meta
    columns = [meta.get_field(name) for name in fields]
    assignments = ", ".join(f"{connection.ops.quote_name(field.column)} = %s" for field in columns)
    sql = f"UPDATE {meta.db_table} SET {assignments} WHERE id = %s AND status = %s AND attempts = %s"  # noqa: S608
    params = [field.get_db_prep_save(value, connection) for field, value in zip(columns, fields.values(), strict=True)]
    params += [meta.pk.get_db_prep_value(attempt.delivery_id, connection), DeliveryStatus.PENDING.value, attempt.number]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.rowcount == 1


def deliver(delivery_id) -> str:
    """One attempt of one delivery; returns what became of it (for the task's log line)."""
    attempt = claim(delivery_id)
    if attempt is None:
        return "skipped"
    try:
        return _send(attempt)
    except Exception as exc:  # a bug must not leave the row retried forever by the sweeper
        logger.exception("webhook attempt crashed", extra={"delivery_id": str(attempt.delivery_id)})
        return _attempt_failed(attempt, None, "", f"internal error: {type(exc).__name__}")


def _send(attempt: Attempt) -> str:
    if attempt.webhook_disabled:
        _settle(attempt, status=DeliveryStatus.DISABLED, last_error="not sent: the channel's webhook is disabled")
        return DeliveryStatus.DISABLED.value
    try:
        target = vet_webhook_url(attempt.url, pin=True)
    except TargetRefused as exc:
        return _attempt_failed(attempt, None, "", f"not sent: the target {exc}")
    body = attempt.body.encode()
    secret = decrypt_at_rest(attempt.secret_encrypted).decode()
    headers = signed_headers(str(attempt.delivery_id), body, secret, int(time.time()))
    try:
        answer = post(target, headers, body, timeout_seconds())
    except SendFailed as exc:
        return _attempt_failed(attempt, None, "", str(exc))
    if 200 <= answer.status < 300:
        now = timezone.now()
        _settle(
            attempt,
            status=DeliveryStatus.DELIVERED,
            delivered_at=now,
            next_attempt_at=now,
            last_status_code=answer.status,
            last_response_excerpt=answer.excerpt,
            last_error="",
        )
        _log(attempt, "webhook delivered", answer.status)
        return DeliveryStatus.DELIVERED.value
    if answer.status == 410:
        return _receiver_gone(attempt, answer)
    return _attempt_failed(attempt, answer.status, answer.excerpt, f"receiver answered {answer.status}")


@transaction.atomic
def _receiver_gone(attempt: Attempt, answer: Answer) -> str:
    """410 Gone: the channel's webhook is switched off; later decisions are not queued."""
    if _settle(
        attempt,
        status=DeliveryStatus.DISABLED,
        last_status_code=answer.status,
        last_response_excerpt=answer.excerpt,
        last_error="receiver answered 410 Gone: the channel's webhook is disabled",
    ):
        Channel.objects.filter(pk=attempt.channel_id).update(webhook_disabled=True)
    _log(attempt, "webhook receiver gone; channel webhook disabled", answer.status, level=logging.WARNING)
    return DeliveryStatus.DISABLED.value


def _attempt_failed(attempt: Attempt, status_code: int | None, excerpt: str, error: str) -> str:
    schedule = retry_schedule()
    outcome = {"last_status_code": status_code, "last_response_excerpt": excerpt, "last_error": error}
    if attempt.number > len(schedule):
        _settle(attempt, status=DeliveryStatus.FAILED, **outcome)
        _log(attempt, "webhook failed for good", status_code, level=logging.WARNING, error=error)
        return DeliveryStatus.FAILED.value
    delay = schedule[attempt.number - 1]
    if _settle(attempt, next_attempt_at=timezone.now() + timedelta(seconds=delay), **outcome):
        outbox.dispatch(str(attempt.delivery_id), countdown=delay)
    _log(attempt, "webhook attempt failed; retry scheduled", status_code, error=error, retry_in_seconds=delay)
    return "retry"


def _log(attempt: Attempt, message: str, status_code, *, level=logging.INFO, **extra) -> None:
    # Ids, codes and the host only: never the secret, the signatures or the URL's path/query.
    logger.log(
        level,
        message,
        extra={
            "delivery_id": str(attempt.delivery_id),
            "event": attempt.event,
            "channel_id": str(attempt.channel_id),
            "attempt": attempt.number,
            "status_code": status_code,
            **extra,
        },
    )


# --- the sweeper and replay ------------------------------------------------------------------


def sweep(now=None) -> list[str]:
    """Re-enqueue pending deliveries overdue by more than the grace period (their task was
    lost: broker restart, worker killed). Re-arming ``next_attempt_at`` keeps a row from
    being queued again before another grace period has passed."""
    now = now or timezone.now()
    with transaction.atomic():
        overdue = list(
            Delivery.objects.select_for_update(skip_locked=True)
            .filter(status=DeliveryStatus.PENDING, next_attempt_at__lt=now - sweep_grace())
            .order_by("next_attempt_at")
            .values_list("pk", flat=True)[:SWEEP_BATCH]
        )
        if overdue:
            Delivery.objects.filter(pk__in=overdue).update(next_attempt_at=now)
            ids = [str(pk) for pk in overdue]
            transaction.on_commit(lambda: _dispatch_all(ids))
    if overdue:
        logger.info("webhook sweeper re-enqueued overdue deliveries", extra={"count": len(overdue)})
    return [str(pk) for pk in overdue]


@transaction.atomic
def replay(deliveries, *, replayed_by: str) -> list[str]:
    """Send deliveries again from the first attempt (an admin's action). A replay is an
    explicit request to reach the receiver, so it switches the channel's webhook back on."""
    now = timezone.now()
    ids = list(deliveries.values_list("pk", flat=True))
    note = f"replayed by {replayed_by} at {now.isoformat(timespec='seconds')}"
    Delivery.objects.filter(pk__in=ids).update(
        status=DeliveryStatus.PENDING, attempts=0, next_attempt_at=now, delivered_at=None, last_error=note
    )
    Channel.objects.filter(deliveries__pk__in=ids, webhook_disabled=True).update(webhook_disabled=False)
    keys = [str(pk) for pk in ids]
    transaction.on_commit(lambda: _dispatch_all(keys))
    logger.info("webhook deliveries replayed", extra={"count": len(keys), "replayed_by": replayed_by})
    return keys


def _dispatch_all(delivery_ids: list[str]) -> None:
    for delivery_id in delivery_ids:
        outbox.dispatch(delivery_id)
