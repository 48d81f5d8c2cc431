"""``POST /v1/evaluate`` answered before Django for the plain case (``governance/asgi.py``).

An evaluation through Django and DRF costs ~13 ms of CPU, most of it the request machinery
and the ORM; the decision and the write are a fraction. This route answers the common
case itself and hands everything else to Django unchanged, so there is one behaviour:

- it only takes a request with ``Authorization: Bearer mdt_…``, a JSON content type and a
  Content-Length within the view's limit; anything else goes to Django untouched;
- the body must parse as strict JSON and pass :func:`parse_plain_request`, a validator
  that accepts a subset of what the DRF serializer accepts and builds the very same
  :class:`EvaluationRequest` (``tests/test_evaluate_fastpath.py`` checks both on a corpus);
- the token is looked up once and then kept in :class:`TokenCache`, keyed by the SHA-256
  of the presented secret; the statement that records the evaluation re-checks the token
  (active, unexpired, same roles, person active, same organization), so revoking a token
  or removing a role takes effect on the next request, as on the Django path;
- the service is :func:`envelopes.evaluation.engine.evaluate`, the same as the view's,
  run in a thread pool; its write goes through the group commit
  (``envelopes.evaluation.group_commit``): the evaluations waiting at the same moment are
  recorded by one statement and one commit, each with its own status.

Whenever the route cannot answer (bad input, unknown or stale token, missing role, a
400/409 from the service, a database error) Django gets the request with the body
replayed, and answers as it always does. The service is idempotent on
(request_source, request_id), so a request handed over after a failed attempt is never
recorded twice.

Postgres only: the token re-check rides on the recording statement, which SQLite lacks.
``MANDATE_EVALUATE_FAST_ROUTE=false`` turns the route off.
"""

import asyncio
import contextlib
import json
import logging
import math
import threading
import time
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from django.conf import settings
from django.db import DatabaseError, connection

from envelopes.evaluation.api.evaluate import EvaluateView
from envelopes.evaluation.engine import (
    LOAD,
    EvaluationRequest,
    StaleToken,
    evaluate,
    evaluation_steps,
    record_one,
)
from envelopes.evaluation.group_commit import GroupCommit
from envelopes.evaluation.snapshot import authority_snapshot, peek_snapshot
from envelopes.services.queries import FORBIDDEN_IN_REQUEST_ID
from governance.api.errors import APIError
from governance.choices import expand_roles
from governance.secret_hashing import hash_secret

logger = logging.getLogger("mandate.request")

PATH = "/v1/evaluate"
REQUIRED_ROLES = frozenset(EvaluateView.required_roles)
MAX_BODY_BYTES = EvaluateView.max_body_bytes
MAX_TEXT = 255
FIELDS = frozenset(
    {"surface_id", "agent_id", "confidence", "process_id", "consequence", "context", "request_id", "request_source"}
)
CONSEQUENCE_FIELDS = ("type", "amount", "currency", "risk_rating")  # the serializer's order
CONSEQUENCE_TYPES = frozenset({"monetary", "risk_rating"})
RISK_RATINGS = frozenset({"low", "medium", "high", "critical"})
# What DRF's JSON response carries for this view, in Django's order (test_evaluate_fastpath.py).
RESPONSE_HEADERS = [
    (b"content-type", b"application/json"),
    (b"allow", b"POST, OPTIONS"),
    (b"x-frame-options", b"DENY"),
    (b"vary", b"Cookie"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
    (b"cross-origin-opener-policy", b"same-origin"),
]


class _NotPlain(Exception):
    """Django decides this one."""


def _refuse(_text=None):
    raise _NotPlain


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _NotPlain
    return value


def _text(value, *, blank: bool, id_like: bool = False) -> str:
    """A string DRF's CharField keeps exactly as it is (nothing to trim, no odd characters)."""
    if type(value) is not str or len(value) > MAX_TEXT or value != value.strip():
        raise _NotPlain
    if not value:
        if not blank:
            raise _NotPlain
        return value
    if not value.isprintable() or (id_like and FORBIDDEN_IN_REQUEST_ID.search(value)):
        raise _NotPlain
    return value


def _number(value, low: float, high: float | None) -> float:
    if type(value) not in (int, float) or not math.isfinite(value) or value < low:
        raise _NotPlain
    if high is not None and value > high:
        raise _NotPlain
    return float(value)


def _consequence(value) -> dict | None:
    if value is None:
        return None
    if type(value) is not dict or not value.keys() <= set(CONSEQUENCE_FIELDS):
        raise _NotPlain
    kind = value.get("type")
    if type(kind) is not str or kind not in CONSEQUENCE_TYPES:
        raise _NotPlain
    result = {"type": kind}
    if "amount" in value:
        result["amount"] = _number(value["amount"], 0.0, None)
    if "currency" in value:
        currency = value["currency"]
        if type(currency) is not str or not (
            currency == "" or (len(currency) == 3 and currency.isascii() and currency.isupper() and currency.isalpha())
        ):
            raise _NotPlain
        result["currency"] = currency
    if "risk_rating" in value:
        rating = value["risk_rating"]
        if type(rating) is not str or rating not in RISK_RATINGS:
            raise _NotPlain
        result["risk_rating"] = rating
    if (kind == "monetary" and "amount" not in result) or (kind == "risk_rating" and "risk_rating" not in result):
        raise _NotPlain
    return result


def parse_plain_request(body: bytes) -> tuple[EvaluationRequest, str] | None:
    """The request and its text when the body is plain; None when Django should decide.

    Plain means: what ``EvaluateView`` would accept and turn into exactly this request.
    """
    try:
        text = body.decode("utf-8")
        data = json.loads(text, parse_float=_finite, parse_constant=_refuse)
        if type(data) is not dict or not data.keys() <= FIELDS:
            raise _NotPlain
        context = data.get("context", {})
        if type(context) is not dict:
            raise _NotPlain
        request = EvaluationRequest(
            surface_id=_text(data.get("surface_id"), blank=False),
            agent_id=_text(data.get("agent_id"), blank=False),
            confidence=_number(data.get("confidence"), 0.0, 1.0),
            request_source=_text(data.get("request_source", ""), blank=True, id_like=True) or "api",
            request_id=_text(data.get("request_id", ""), blank=True, id_like=True),
            process_id=_text(data.get("process_id", ""), blank=True),
            consequence=_consequence(data.get("consequence")),
            context=context,
        )
    except (_NotPlain, ValueError, RecursionError):
        return None
    return request, text


@dataclass(frozen=True)
class CachedToken:
    token_id: str
    roles: list  # as stored (the recording statement compares them)
    allowed: bool  # holds a role that may evaluate
    subject_id: str
    organization: object
    loaded_at: float

    @property
    def check(self) -> dict:
        """What the recording statement re-checks."""
        return {"id": self.token_id, "roles": self.roles}


class TokenCache:
    """Verified tokens by the SHA-256 of the presented secret, for ``ttl`` seconds.

    Only the digest is kept, never the secret. Staleness is bounded by the recording
    statement's re-check, not by the TTL; the TTL only bounds memory and how long a
    changed organization object lives here.
    """

    def __init__(self, ttl: float = 300.0, max_entries: int = 10_000):
        self.ttl, self.max_entries = ttl, max_entries
        self._entries: OrderedDict[str, CachedToken] = OrderedDict()
        self._lock = threading.Lock()

    def cached(self, secret: str) -> CachedToken | None:
        """The entry, if cached and fresh (no query)."""
        entry = self._entries.get(hash_secret(secret))
        if entry is not None and time.monotonic() - entry.loaded_at < self.ttl:
            return entry
        return None

    def get(self, secret: str) -> CachedToken | None:
        """The entry, looking the token up when it is not cached (one query)."""
        from governance.services.tokens import authenticate_token

        entry = self.cached(secret)
        if entry is not None:
            return entry
        key = hash_secret(secret)
        token = authenticate_token(secret)
        if token is None or token.principal.organization is None:
            self.drop(secret)
            return None
        entry = CachedToken(
            token_id=str(token.pk),
            roles=list(token.roles),
            allowed=bool(expand_roles(token.roles) & REQUIRED_ROLES),
            subject_id=str(token.principal.pk),
            organization=token.principal.organization,
            loaded_at=time.monotonic(),
        )
        with self._lock:
            self._entries[key] = entry
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)
        return entry

    def drop(self, secret: str) -> None:
        with self._lock:
            self._entries.pop(hash_secret(secret), None)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


tokens = TokenCache()
group = GroupCommit(max_batch=max(1, settings.MANDATE_EVALUATE_GROUP_COMMIT))


def _render(response: dict) -> bytes:
    return json.dumps(response, ensure_ascii=False, separators=(",", ":")).encode()


@contextlib.contextmanager
def _handing_over(secret: str):
    """The failures after which Django answers the request instead (the caller returns None)."""
    try:
        yield
    except StaleToken:
        tokens.drop(secret)
    except APIError:
        pass
    except DatabaseError:
        logger.warning("evaluate fast route: database error, handing over to Django", exc_info=True)


def _admissible(token: CachedToken | None, body: bytes) -> tuple[EvaluationRequest, str] | None:
    """The parsed request when the token may evaluate and the body is plain; else None."""
    if token is None or not token.allowed:
        return None
    return parse_plain_request(body)


def answer(secret: str, body: bytes) -> bytes | None:
    """The 200 body for a plain evaluation, or None: Django answers instead. Synchronous,
    each evaluation committing alone (the benchmark's in-process breakdown uses it)."""
    with _handing_over(secret):
        token = _in_thread(tokens.get, secret)
        parsed = _admissible(token, body)
        if parsed is None:
            return None
        request, raw = parsed
        response = _in_thread(evaluate, token.organization, request, raw, token.subject_id, token=token.check)
        return _render(response)
    return None


def _in_thread(function, *args, **kwargs):
    """Run ``function`` in a pool thread; a database error also drops that thread's
    connection, so the next call there reconnects (these threads see no request signals)."""
    try:
        return function(*args, **kwargs)
    except DatabaseError:
        connection.close()
        raise


async def answer_async(secret: str, body: bytes, executor) -> bytes | None:
    """``answer`` for the event loop: deciding runs on the loop (no query when the token
    and the snapshot are cached); lookups run in ``executor``; the write goes through the
    group commit. None: Django answers instead."""
    loop = asyncio.get_running_loop()
    with _handing_over(secret):
        token = tokens.cached(secret) or await loop.run_in_executor(executor, _in_thread, tokens.get, secret)
        parsed = _admissible(token, body)
        if parsed is None:
            return None
        request, raw = parsed
        organization_id = token.organization.pk
        snapshot, checked = peek_snapshot(organization_id), False
        if snapshot is None:
            snapshot = await loop.run_in_executor(executor, _in_thread, authority_snapshot, organization_id)
            checked = True
        steps = evaluation_steps(organization_id, request, raw, token.subject_id, snapshot, checked)
        reply = None
        while True:
            try:
                step = steps.send(reply)
            except StopIteration as finished:
                return _render(finished.value)
            if step[0] == LOAD:
                reply = await loop.run_in_executor(executor, _in_thread, authority_snapshot, organization_id)
            elif group.max_batch > 1:
                reply = await group.record_async(step[1], step[2], token.check)
            else:
                reply = await loop.run_in_executor(executor, _in_thread, record_one, step[1], step[2], token.check)
    return None


def _headers(scope) -> dict[bytes, bytes]:
    return dict(scope.get("headers") or ())


def _secret(headers) -> str | None:
    value = headers.get(b"authorization", b"").decode("latin-1")
    scheme, _, secret = value.partition(" ")
    secret = secret.strip()
    if scheme.lower() != "bearer" or not secret.startswith("mdt_"):
        return None
    return secret


def _json_content_type(headers) -> bool:
    media, _, params = headers.get(b"content-type", b"").decode("latin-1").partition(";")
    if media.strip().lower() != "application/json":
        return False
    params = params.strip().lower().replace(" ", "")
    return params in ("", "charset=utf-8")


def _content_length(headers) -> int | None:
    try:
        length = int(headers.get(b"content-length", b""))
    except ValueError:
        return None
    return length if 0 <= length <= MAX_BODY_BYTES else None


class EvaluateRouter:
    """Answers plain ``POST /v1/evaluate`` requests; everything else goes to ``app``."""

    def __init__(self, app, threads: int | None = None):
        self.app = app
        self.threads = threads or settings.MANDATE_EVALUATE_THREADS
        self._executor = None
        self.enabled = settings.MANDATE_EVALUATE_FAST_ROUTE and connection.vendor == "postgresql"

    @property
    def executor(self) -> ThreadPoolExecutor:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(self.threads, thread_name_prefix="evaluate")
        return self._executor

    async def __call__(self, scope, receive, send):
        if not (
            self.enabled and scope["type"] == "http" and scope.get("method") == "POST" and scope.get("path") == PATH
        ):
            return await self.app(scope, receive, send)
        headers = _headers(scope)
        secret = _secret(headers)
        length = _content_length(headers)
        if secret is None or length is None or not _json_content_type(headers):
            return await self.app(scope, receive, send)
        started = time.perf_counter()
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            chunk = message.get("body", b"")
            chunks.append(chunk)
            size += len(chunk)
            more = message.get("more_body", False)
            if size > length:
                break
        body = b"".join(chunks)
        content = None
        if not more and size == length:
            content = await answer_async(secret, body, self.executor)
        if content is None:
            return await self.app(scope, _replay(body, more, receive), send)
        headers = [*RESPONSE_HEADERS, (b"content-length", str(len(content)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": content})
        if logger.isEnabledFor(logging.INFO):
            logger.info(
                "request",
                extra={
                    "method": "POST",
                    "path": PATH,
                    "status": 200,
                    "duration_ms": round((time.perf_counter() - started) * 1000, 2),
                },
            )


def _replay(body: bytes, more: bool, receive):
    """``receive`` for Django: the body read so far, then whatever the client still sends."""
    pending = [{"type": "http.request", "body": body, "more_body": more}]

    async def replayed():
        if pending:
            return pending.pop()
        return await receive()

    return replayed
