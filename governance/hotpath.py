"""The hot path: endpoints that must be fast, answered in front of Django (``governance/asgi.py``).

Django and DRF cost ~13 ms of CPU per request here, far more than the work of a hot
endpoint (evaluate, execute, consume, heartbeat). An endpoint declares itself hot with a
:class:`HotEndpoint`; :class:`HotPath` answers its plain requests and gives everything
else to Django with the body replayed, so there is one behaviour. docs/evaluation.md
("The hot path") says how to declare an endpoint; evaluation's declaration is
``envelopes/evaluation/fastroute.py``.

Django answers instead whenever the hot path cannot: admission refused, an unknown token or
a missing role, :class:`HandOver` or a domain error from the parser or the service, a token
the write found stale (:class:`~governance.token_cache.StaleToken`), a database error.
Hot services are idempotent, so a request handed over after a failed attempt is never
recorded twice. Postgres only: the writes' token re-check rides on their statements.
"""

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable, Generator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from django.conf import settings
from django.core.exceptions import SynchronousOnlyOperation
from django.db import DatabaseError, connection
from rest_framework.exceptions import ParseError

from governance.allowed_hosts import AllowedHosts
from governance.api.parsers import parse_strict_json
from governance.errors import DomainError
from governance.front_routes import log_request
from governance.group_commit import GroupCommit
from governance.hot_steps import Cached, InThread, OnLoop, Write
from governance.token_cache import CachedToken, StaleToken, TokenCache

logger = logging.getLogger("mandate.request")

__all__ = ["Cached", "HandOver", "HotEndpoint", "HotPath", "HotRequest", "HotRoute", "InThread", "OnLoop", "Write"]


class HandOver(Exception):
    """Django answers this request (raised by a parser or a service of the hot path)."""


# The service of a hot endpoint: a generator that does no I/O itself. It yields InThread,
# Cached and Write steps, gets their results back, and returns the response body (a dict).
Service = Callable[[CachedToken, object], Generator[InThread | Write, object, dict]]

# The headers Django and our middleware put on a DRF JSON answer, in Django's order
# (``Allow`` comes from the view; tests/test_evaluate_fastpath.py compares them).
_VIEW_HEADERS = (
    (b"x-frame-options", b"DENY"),
    (b"vary", b"Cookie"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
    (b"cross-origin-opener-policy", b"same-origin"),
)
# Accept values for which DRF's negotiation picks plain ``application/json`` (no indent).
_JSON_ACCEPT = frozenset({"*/*", "application/*", "application/json"})


@dataclass(eq=False)
class HotEndpoint:
    """An endpoint answered on the hot path for its plain requests.

    - ``view``: the DRF view it stands in front of, whose answers it mirrors: its
      ``required_roles`` authorize, its ``max_body_bytes`` bounds the body, its methods
      make the ``Allow`` header;
    - ``parse(body) -> request``: the endpoint's parser (the view's too); raises
      HandOver or a domain error when Django should answer;
    - ``service(caller, request)``: see ``Service``;
    - ``record(items) -> [result per item]``: the one statement that writes what the
      service's Write steps carry, several at once (the group commit); it re-checks each
      item's token (``caller.check``) and the service raises StaleToken when it failed;
    - ``max_batch``: most items per group commit (1: each write commits alone).
    """

    path: str
    method: str
    view: type
    parse: Callable[[bytes], object]
    service: Service
    record: Callable[[list], list]
    max_batch: int = 64
    enabled: bool = True
    roles: frozenset = field(init=False)
    max_body_bytes: int = field(init=False)
    headers: tuple = field(init=False)
    group: GroupCommit = field(init=False)

    def __post_init__(self):
        required = getattr(self.view, "required_roles", ())
        if isinstance(required, dict):
            required = required.get(self.method, required.get("*", ()))
        self.roles = frozenset(required)
        self.max_body_bytes = getattr(self.view, "max_body_bytes", None) or settings.MANDATE_MAX_BODY_BYTES
        allow = ", ".join(self.view().allowed_methods).encode()
        self.headers = ((b"content-type", b"application/json"), (b"allow", allow), *_VIEW_HEADERS)
        self.group = GroupCommit(self.record, max_batch=max(1, self.max_batch), name=f"group-commit {self.path}")


tokens = TokenCache()


def strict_json(body: bytes) -> tuple[object, str]:
    """The body as the API's strict JSON parser reads it, and its text; HandOver when it is
    not strict UTF-8 JSON (Django answers the 400)."""
    try:
        return parse_strict_json(body), body.decode("utf-8")
    except ParseError as exc:
        raise HandOver from exc


def render(response: dict) -> bytes:
    """The bytes DRF's JSONRenderer writes for ``response`` (compact, UTF-8, U+2028/9 escaped)."""
    text = json.dumps(response, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    return text.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029").encode()


@contextlib.contextmanager
def _handing_over(secret: str):
    """The failures after which Django answers the request instead (the caller returns None)."""
    try:
        yield
    except StaleToken:
        tokens.drop(secret)
    except (HandOver, DomainError):
        pass
    except DatabaseError:
        logger.warning("hot path: database error, handing over to Django", exc_info=True)


def _in_thread(function, *args):
    """Run ``function`` in a pool thread. These threads see no request signals, so the
    thread's database connection is handed back here: to the connection pool after every
    step (a thread holds none between steps — kept, the hot path's threads would hold most of
    the pool and Django's own requests would wait for a connection, then answer 503), and
    dropped after a database error, so the next step there reconnects."""
    try:
        return function(*args)
    except DatabaseError:
        connection.close()
        raise
    finally:
        _hand_back_connection()


def _hand_back_connection() -> None:
    """Return this thread's pooled connection to the pool (not inside a transaction; without
    a pool the connection is kept: reconnecting per step would cost more than it saves)."""
    if connection.connection is not None and not connection.in_atomic_block and getattr(connection, "pool", None):
        connection.close()


async def _cached(step: Cached, loop, executor):
    """A Cached step's result: on the loop when what it reads is in memory, else in a thread."""
    try:
        return step.function(*step.args)
    except SynchronousOnlyOperation:
        return await loop.run_in_executor(executor, _in_thread, step.function, *step.args)


def _record_alone(endpoint: HotEndpoint, item):
    return endpoint.record([item])[0]


def _admitted(endpoint: HotEndpoint, token: CachedToken | None, body: bytes):
    """The parsed request when the token may call the endpoint; None otherwise."""
    if token is None or not token.holds_any(endpoint.roles):
        return None
    return endpoint.parse(body)


def answer(endpoint: HotEndpoint, secret: str, body: bytes) -> bytes | None:
    """The 200 body for a plain request, or None: Django answers instead. Synchronous, each
    write committing alone (the benchmark's in-process breakdown uses it)."""
    with _handing_over(secret):
        token = _in_thread(tokens.get, secret)
        request = _admitted(endpoint, token, body)
        if request is None:
            return None
        steps = endpoint.service(token, request)
        reply = None
        while True:
            try:
                step = steps.send(reply)
            except StopIteration as finished:
                return render(finished.value)
            if type(step) is Write:
                reply = _in_thread(_record_alone, endpoint, step.item)
            else:
                reply = _in_thread(step.function, *step.args)
    return None


async def answer_async(endpoint: HotEndpoint, secret: str, body: bytes, executor) -> bytes | None:
    """``answer`` for the event loop: the service runs on the loop (no query when the token
    and what it reads are cached); InThread steps run in ``executor``; writes go through the
    group commit. None: Django answers instead."""
    loop = asyncio.get_running_loop()
    with _handing_over(secret):
        token = tokens.cached(secret) or await loop.run_in_executor(executor, _in_thread, tokens.get, secret)
        request = _admitted(endpoint, token, body)
        if request is None:
            return None
        steps = endpoint.service(token, request)
        reply = None
        while True:
            try:
                step = steps.send(reply)
            except StopIteration as finished:
                return render(finished.value)
            if type(step) is Cached:
                reply = await _cached(step, loop, executor)
            elif type(step) is not Write:
                reply = await loop.run_in_executor(executor, _in_thread, step.function, *step.args)
            elif endpoint.group.max_batch > 1:
                reply = await endpoint.group.record_async(step.item)
            else:
                reply = await loop.run_in_executor(executor, _in_thread, _record_alone, endpoint, step.item)
    return None


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


def _plain_json_accepted(headers) -> bool:
    """No Accept header, or one for which DRF answers plain ``application/json``."""
    accept = headers.get(b"accept")
    if accept is None:
        return True
    items = [item.strip() for item in accept.decode("latin-1").split(",")]
    return all(item in _JSON_ACCEPT for item in items)


def _content_length(headers, limit: int) -> int | None:
    try:
        length = int(headers.get(b"content-length", b""))
    except ValueError:
        return None
    return length if 0 <= length <= limit else None


class HotPath:
    """Answers the plain requests of ``endpoints``; everything else goes to ``app``.

    Admission (else Django): the declared method and path, no query string, no repeated
    header, a Host Django allows, ``Authorization: Bearer mdt_…``, a JSON content type
    (``charset=utf-8`` at most), an Accept that DRF answers with plain JSON, and a
    Content-Length within the view's limit that the body matches.
    """

    def __init__(self, app, endpoints: list, threads: int = 16):
        self.app = app
        self.threads = threads
        self._executor = None
        on_postgres = connection.vendor == "postgresql"
        live = [e for e in endpoints if e.enabled and on_postgres]
        self.endpoints = {(e.method, e.path): e for e in live if isinstance(e, HotEndpoint)}
        self.routes = [e for e in live if isinstance(e, HotRoute)]
        self._hosts = AllowedHosts()
        self._strict_transport = _strict_transport_security()

    @property
    def executor(self) -> ThreadPoolExecutor:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(self.threads, thread_name_prefix="hotpath")
        return self._executor

    def _response_headers(self, endpoint: HotEndpoint, scope, content: bytes) -> list:
        headers = [*endpoint.headers, (b"content-length", str(len(content)).encode())]
        if self._strict_transport and _is_secure(scope):
            # where Django's SecurityMiddleware puts it: before X-Content-Type-Options
            at = next(i for i, (name, _) in enumerate(headers) if name == b"x-content-type-options")
            headers.insert(at, self._strict_transport)
        return headers

    async def __call__(self, scope, receive, send):
        endpoint = None
        if scope["type"] == "http" and not scope.get("query_string"):
            endpoint = self.endpoints.get((scope.get("method"), scope.get("path")))
        if endpoint is None:
            if self.routes and scope["type"] == "http":
                for route in self.routes:
                    params = route.match(scope.get("method"), scope.get("path"))
                    if params is not None:
                        return await self._route(route, params, scope, receive, send)
            return await self.app(scope, receive, send)
        raw_headers = list(scope.get("headers") or ())
        headers = dict(raw_headers)
        secret = _secret(headers)
        length = _content_length(headers, endpoint.max_body_bytes)
        if (
            secret is None
            or length is None
            or len(headers) != len(raw_headers)  # Django would join repeated headers
            or not _json_content_type(headers)
            or not _plain_json_accepted(headers)
            or not self._hosts.allow(headers)
        ):
            return await self.app(scope, receive, send)
        started = time.perf_counter()
        read = await _read_body(receive, length)
        if read is None:
            return  # the client went away
        body, size, more = read
        content = None
        if not more and size == length:
            content = await answer_async(endpoint, secret, body, self.executor)
        if content is None:
            return await self.app(scope, _replay(body, more, receive), send)
        headers = self._response_headers(endpoint, scope, content)
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": content})
        log_request(endpoint.method, endpoint.path, 200, started)

    async def _route(self, route: "HotRoute", params: dict, scope, receive, send):
        raw_headers = list(scope.get("headers") or ())
        headers = dict(raw_headers)
        length = _content_length(headers, route.max_body_bytes)
        if (
            scope.get("query_string")
            or length is None
            or len(headers) != len(raw_headers)
            or not _json_content_type(headers)
            or not self._hosts.allow(headers)
        ):
            return await self.app(scope, receive, send)
        started = time.perf_counter()
        read = await _read_body(receive, length)
        if read is None:
            return  # the client went away
        body, size, more = read
        if more or size != length:
            return await self.app(scope, _replay(body, more, receive), send)
        request = HotRequest(
            scope["method"],
            scope["path"],
            params,
            {name.decode("latin-1"): value.decode("latin-1") for name, value in raw_headers},
            body,
        )
        status, answer, *extra = await drive_async(route, request, self.executor)
        content = render(answer)
        own = [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in (extra[0] if extra else ())]
        response_headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(content)).encode()),
            *own,
            *_VIEW_HEADERS,
        ]
        if self._strict_transport and _is_secure(scope):
            response_headers.append(self._strict_transport)
        await send({"type": "http.response.start", "status": status, "headers": response_headers})
        await send({"type": "http.response.body", "body": content})
        correlation_id = next((value.decode("latin-1") for name, value in own if name == b"x-correlation-id"), None)
        log_request(route.method, scope["path"], status, started, correlation_id)


async def _read_body(receive, length: int) -> tuple[bytes, int, bool] | None:
    """The body as far as ``length`` allows: (bytes, size read, more to come); None when the
    client went away."""
    chunks, size, more = [], 0, True
    while more:
        message = await receive()
        if message["type"] != "http.request":
            return None
        chunks.append(message.get("body", b""))
        size += len(chunks[-1])
        more = message.get("more_body", False)
        if size > length:
            break
    return b"".join(chunks), size, more


def _strict_transport_security() -> tuple | None:
    """The header Django's SecurityMiddleware adds to answers over HTTPS, if configured."""
    if not settings.SECURE_HSTS_SECONDS:
        return None
    value = f"max-age={settings.SECURE_HSTS_SECONDS}"
    if settings.SECURE_HSTS_INCLUDE_SUBDOMAINS:
        value += "; includeSubDomains"
    if settings.SECURE_HSTS_PRELOAD:
        value += "; preload"
    return (b"strict-transport-security", value.encode())


def _is_secure(scope) -> bool:
    """Django's ``request.is_secure()`` for this scope: ``SECURE_PROXY_SSL_HEADER`` first."""
    proxy = getattr(settings, "SECURE_PROXY_SSL_HEADER", None)
    if proxy:
        header, secure_value = proxy
        meta_name = header.removeprefix("HTTP_")
        values = [
            value.decode("latin-1")
            for name, value in scope.get("headers") or ()
            if name.decode("latin-1").upper().replace("-", "_") == meta_name
        ]
        if values:
            return ",".join(values).split(",", 1)[0].strip() == secure_value
    return scope.get("scheme") == "https"


def _replay(body: bytes, more: bool, receive):
    """``receive`` for Django: the body read so far, then whatever the client still sends."""
    pending = [{"type": "http.request", "body": body, "more_body": more}]

    async def replayed():
        if pending:
            return pending.pop()
        return await receive()

    return replayed


# --- routes that answer for themselves ---------------------------------------------------


@dataclass(frozen=True)
class HotRequest:
    """What a :class:`HotRoute`'s service sees: the method, the path and its parameters, the
    headers (lower-case names, one value each) and the body."""

    method: str
    path: str
    params: dict
    headers: dict
    body: bytes


@dataclass(eq=False)
class HotRoute:
    """A hot endpoint that, once admitted, answers every request itself — its errors too —
    because its service does something that must happen once (the action gate's execute
    consumes a DPoP proof: a request handed to Django after that would be a replay).

    - ``path``: a pattern whose ``{name}`` segments match one path segment each
      (``/v1/actions/{action_id}/execute``);
    - ``service(request: HotRequest)``: a generator of InThread and Write steps (see
      ``Service``) returning ``(status, body)``, or ``(status, body, headers)`` with headers
      of its own (``(name, value)`` pairs, e.g. a correlation id); Django's view for the
      same URL drives the same generator synchronously (``drive``), so both answer alike;
    - ``errors(exc) -> (status, body[, headers])``: the answer for an exception the service raised;
    - ``record(items)``: the group commit's statement for Write steps (None: no writes).

    Admission (else Django's view answers, with the same service): the method and a
    matching path, no query string, no repeated header, a Host Django allows, a JSON
    content type, and a Content-Length within ``max_body_bytes`` that the body matches.
    """

    path: str
    method: str
    service: Callable[[HotRequest], Generator]
    errors: Callable[[Exception], tuple[int, dict]]
    record: Callable[[list], list] | None = None
    max_batch: int = 64
    max_body_bytes: int = 1024 * 1024
    enabled: bool = True
    pattern: object = field(init=False)
    group: GroupCommit | None = field(init=False)

    def __post_init__(self):
        import re

        parts = [
            f"(?P<{part[1:-1]}>[^/]+)" if part.startswith("{") and part.endswith("}") else re.escape(part)
            for part in self.path.split("/")
        ]
        self.pattern = re.compile("^" + "/".join(parts) + "$")
        self.group = (
            GroupCommit(self.record, max_batch=max(1, self.max_batch), name=f"group-commit {self.path}")
            if self.record is not None
            else None
        )

    def match(self, method: str, path: str) -> dict | None:
        if method != self.method:
            return None
        found = self.pattern.match(path)
        return found.groupdict() if found else None


class _Driving:
    """A route's service being driven: the next step (the reply, or the failure thrown back
    into the service, of the one before); StopIteration carries the answer."""

    def __init__(self, route: HotRoute, request: HotRequest):
        self.steps = route.service(request)
        self.reply, self.failure = None, None

    def next_step(self):
        reply, failure = self.reply, self.failure
        self.reply, self.failure = None, None
        return self.steps.throw(failure) if failure is not None else self.steps.send(reply)


def drive(route: HotRoute, request: HotRequest) -> tuple[int, dict]:
    """Run the route's service synchronously in this thread (Django's view, tests): each
    write commits alone. A step that fails is thrown back into the service (which may record
    it, give something back, or answer otherwise); what escapes is answered by ``errors``."""
    try:
        driving = _Driving(route, request)
        while True:
            try:
                step = driving.next_step()
            except StopIteration as finished:
                return finished.value
            try:
                driving.reply = route.record([step.item])[0] if type(step) is Write else step.function(*step.args)
            except Exception as exc:  # noqa: BLE001 (back into the service)
                driving.failure = exc
    except Exception as exc:  # noqa: BLE001 (the route says how each failure is answered)
        return route.errors(exc)


async def drive_async(route: HotRoute, request: HotRequest, executor) -> tuple[int, dict]:
    """``drive`` on the event loop: InThread steps in ``executor``, writes by group commit."""
    loop = asyncio.get_running_loop()
    try:
        driving = _Driving(route, request)
        while True:
            try:
                step = driving.next_step()
            except StopIteration as finished:
                return finished.value
            try:
                if type(step) is Cached:  # most steps: run here, without a coroutine of their own
                    try:
                        driving.reply = step.function(*step.args)
                    except SynchronousOnlyOperation:  # it needs the database after all
                        driving.reply = await loop.run_in_executor(executor, _in_thread, step.function, *step.args)
                else:
                    driving.reply = await _run_step(route, step, loop, executor)
            except Exception as exc:  # noqa: BLE001 (back into the service)
                driving.failure = exc
    except Exception as exc:  # noqa: BLE001
        return route.errors(exc)


async def _run_step(route: HotRoute, step, loop, executor):
    if type(step) is OnLoop:
        return await step.coroutine(*step.args)
    if type(step) is not Write:
        return await loop.run_in_executor(executor, _in_thread, step.function, *step.args)
    if route.group.max_batch > 1:
        return await route.group.record_async(step.item)
    return await loop.run_in_executor(executor, _in_thread, _record_one, route, step.item)


def _record_one(route: HotRoute, item):
    return route.record([item])[0]
