"""The egress guard's HTTP/1.1 client, on asyncio: one exchange per connection at a time,
keep-alive connections pooled per vetted address, answers parsed by httptools (llhttp).

It knows nothing of the rules: ``egress`` vets a call (scheme, method, domain, every address
the name resolves to) and hands this module the one address to connect to. A connection is
opened to that address and pooled under it, so a pooled connection is only ever reused for
the same host, port and vetted address. Callers bound an exchange with ``asyncio.timeout``;
a connection that was interrupted, answered badly or will not be kept alive is closed, never
pooled.

Why not httpx's client: on the gate's hot path its async client cost 2.4 ms of CPU per call
and its sync client, in a pool thread, 1.1 ms; this exchange costs ~0.05 ms (docs/gate.md
"The provider's HTTP client", docs/performance.md). URLs are still parsed by httpx
(``egress.vet``), so the host vetted is the host this module is told to reach.
"""

import asyncio
import os
import re
import ssl
import threading
import time
import weakref
import zlib
from dataclasses import dataclass

import certifi
import httptools

IDLE_SECONDS = 4.0  # shorter than common servers' keep-alive (uvicorn 5 s, nginx 75 s)
MAX_IDLE_PER_ORIGIN = 32
TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
UNSAFE_VALUE = re.compile(r"[\x00\r\n]")
IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})


class WireError(Exception):
    """The exchange could not be completed (connection, TLS, protocol)."""


class TooLarge(Exception):
    """The answer is larger than the caller's cap."""


class _NotSent(WireError):
    """A pooled connection was found closed before any byte of an answer arrived."""


@dataclass(frozen=True)
class Reply:
    status: int
    headers: list[tuple[str, str]]  # as received, names lower-cased
    content: bytes


@dataclass(frozen=True)
class Origin:
    scheme: str
    host: str  # the name (TLS server name, Host header)
    port: int
    address: str  # the vetted address the connection goes to


def request_bytes(method: str, target: str, host_header: str, headers: dict[str, str], content: bytes | None) -> bytes:
    """The request head (and body); WireError for a header that is not a token or whose
    value would split the message."""
    lines = [f"{method} {target} HTTP/1.1", f"Host: {host_header}"]
    names = set()
    for name, value in headers.items():
        if not TOKEN.match(name) or UNSAFE_VALUE.search(value):
            raise WireError(f"header {name!r} cannot be sent")
        names.add(name.lower())
        lines.append(f"{name}: {value}")
    if "accept" not in names:
        lines.append("Accept: */*")
    if "accept-encoding" not in names:
        lines.append("Accept-Encoding: identity")
    if content is not None or method in ("POST", "PUT", "PATCH"):
        lines.append(f"Content-Length: {len(content or b'')}")
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    return head + (content or b"")


class _Connection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection; ``exchange`` sends a request and waits for its answer."""

    def __init__(self):
        self.transport = None
        self.closed = False
        self.idle_since = 0.0
        self._answer = None  # the exchange in progress

    # -- asyncio.Protocol
    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        answer = self._answer
        if answer is None:  # bytes nobody asked for: the connection is no longer usable
            self.close()
            return
        answer.feed(data)

    def eof_received(self):
        return False  # close our side too; connection_lost follows

    def connection_lost(self, exc):
        self.closed = True
        if self._answer is not None:
            self._answer.ended(exc)

    # -- use
    def close(self):
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    async def exchange(self, payload: bytes, head_only: bool, cap: int) -> tuple[Reply, bool]:
        """The answer to ``payload``, and whether this connection may be reused."""
        answer = _Answer(self, head_only, cap)
        self._answer = answer
        try:
            self.transport.write(payload)
            reply = await answer.done
        finally:
            self._answer = None
        return reply, answer.reusable and not self.closed


class _Answer:
    """The answer being read: httptools' callbacks, the cap, and the future the caller awaits."""

    def __init__(self, connection: _Connection, head_only: bool, cap: int):
        self.connection = connection
        self.head_only = head_only
        self.cap = cap
        self.parser = httptools.HttpResponseParser(self)
        self.done = asyncio.get_running_loop().create_future()
        self.headers: list[tuple[str, str]] = []
        self.body: list[bytes] = []
        self.size = 0
        self.received = False
        self.headers_done = False
        self.reusable = False

    def feed(self, data: bytes):
        self.received = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self.fail(WireError("the target switched protocols"))
        except httptools.HttpParserError as exc:
            if not self.done.done():
                self.fail(WireError(f"the answer is not valid HTTP ({exc})"))

    def ended(self, exc):
        """The connection closed: the answer is complete only when its end is the close."""
        if self.done.done():
            return
        if self.headers_done and self._delimited_by_close():
            self._complete(reusable=False)
        elif not self.received:
            self.fail(_NotSent("the connection closed before an answer"))
        else:
            self.fail(WireError("the connection closed in the middle of the answer"))

    def fail(self, exc: Exception):
        self.connection.close()
        if not self.done.done():
            self.done.set_exception(exc)

    def _delimited_by_close(self) -> bool:
        names = {name for name, _ in self.headers}
        return "content-length" not in names and "transfer-encoding" not in names

    def _complete(self, reusable: bool):
        if self.done.done():
            return
        status = self.parser.get_status_code()
        try:
            content = _decoded(b"".join(self.body), self.headers, self.cap)
        except (TooLarge, WireError) as exc:
            self.fail(exc)
            return
        self.reusable = reusable
        self.done.set_result(Reply(status, self.headers, content))

    # -- httptools callbacks
    def on_message_begin(self):
        self.headers, self.body, self.size, self.headers_done = [], [], 0, False

    def on_header(self, name: bytes, value: bytes):
        self.headers.append((name.decode("latin-1").lower(), value.decode("latin-1")))

    def on_headers_complete(self):
        status = self.parser.get_status_code()
        if 100 <= status < 200:
            return
        self.headers_done = True
        declared = next((v for n, v in self.headers if n == "content-length"), "")
        if declared.strip().isdigit() and int(declared) > self.cap:
            self.fail(TooLarge())
        elif self.head_only:
            # llhttp would wait for the Content-Length's bytes a HEAD answer never sends
            self._complete(reusable=False)

    def on_body(self, chunk: bytes):
        self.size += len(chunk)
        if self.size > self.cap:
            self.fail(TooLarge())
        else:
            self.body.append(chunk)

    def on_message_complete(self):
        if 100 <= self.parser.get_status_code() < 200:
            return  # an interim answer (100 Continue, 103 Early Hints): the real one follows
        self._complete(reusable=self.parser.should_keep_alive())


def _decoded(raw: bytes, headers, cap: int) -> bytes:
    encoding = ",".join(v for n, v in headers if n == "content-encoding").strip().lower()
    if encoding in ("", "identity"):
        return raw
    if encoding not in ("gzip", "x-gzip", "deflate"):
        raise WireError(f"the answer's content-encoding {encoding!r} is not supported")
    try:
        decoder = zlib.decompressobj(47)  # gzip or zlib, from the header
        content = decoder.decompress(raw, cap + 1)
    except zlib.error as exc:
        raise WireError("the answer's compressed body is not valid") from exc
    if len(content) > cap or decoder.unconsumed_tail:
        raise TooLarge()
    return content


class Pool:
    """Keep-alive connections of one event loop, by origin and vetted address."""

    def __init__(self):
        self._idle: dict[Origin, list[_Connection]] = {}
        self._tls = None

    def idle(self, origin: Origin) -> int:
        return len(self._idle.get(origin, ()))

    async def exchange(self, origin: Origin, method: str, payload: bytes, cap: int) -> Reply:
        """Send ``payload`` to ``origin`` and read the answer (at most ``cap`` bytes of body).
        A reused connection found closed before answering is replaced once, for methods
        that may be repeated."""
        connection = self._take(origin)
        if connection is not None:
            try:
                return await self._use(origin, connection, method, payload, cap)
            except _NotSent:
                if method not in IDEMPOTENT:
                    raise
        return await self._use(origin, await self._open(origin), method, payload, cap)

    async def _use(self, origin, connection, method, payload, cap) -> Reply:
        try:
            reply, reusable = await connection.exchange(payload, method == "HEAD", cap)
        except BaseException:
            connection.close()  # interrupted (the deadline) or failed: never pooled
            raise
        if reusable:
            self._put(origin, connection)
        else:
            connection.close()
        return reply

    def _take(self, origin: Origin) -> _Connection | None:
        idle = self._idle.get(origin)
        now = time.monotonic()
        while idle:
            connection = idle.pop()
            if not connection.closed and now - connection.idle_since < IDLE_SECONDS:
                return connection
            connection.close()
        return None

    def _put(self, origin: Origin, connection: _Connection):
        connection.idle_since = time.monotonic()
        idle = self._idle.setdefault(origin, [])
        if len(idle) >= MAX_IDLE_PER_ORIGIN:
            idle.pop(0).close()
        idle.append(connection)

    async def _open(self, origin: Origin) -> _Connection:
        loop = asyncio.get_running_loop()
        tls = None
        if origin.scheme == "https":
            tls = self._tls_context()
        try:
            _, connection = await loop.create_connection(
                _Connection,
                origin.address,
                origin.port,
                ssl=tls,
                server_hostname=origin.host if tls else None,
            )
        except ssl.SSLError as exc:
            raise WireError(f"TLS failed: {exc.reason or type(exc).__name__}") from exc
        except OSError as exc:
            reason = os.strerror(exc.errno).lower() if exc.errno else type(exc).__name__
            raise WireError(f"could not connect: {reason}") from exc
        return connection

    def _tls_context(self) -> ssl.SSLContext:
        if self._tls is None:
            context = ssl.create_default_context(cafile=certifi.where())
            context.set_alpn_protocols(["http/1.1"])
            self._tls = context
        return self._tls

    def close(self):
        for idle in self._idle.values():
            for connection in idle:
                connection.close()
        self._idle.clear()


_pools: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Pool]" = weakref.WeakKeyDictionary()


def pool() -> Pool:
    """The running loop's pool."""
    loop = asyncio.get_running_loop()
    found = _pools.get(loop)
    if found is None:
        found = _pools[loop] = Pool()
    return found


# --- for callers that block (Django's view, a WASM module's host call, tests) ---------------

_background: dict[int, asyncio.AbstractEventLoop] = {}
_background_lock = threading.Lock()


def run_blocking(coroutine):
    """Run ``coroutine`` on this process's background loop and wait for its result."""
    pid = os.getpid()
    loop = _background.get(pid)
    if loop is None:
        with _background_lock:
            loop = _background.get(pid)
            if loop is None:
                loop = asyncio.new_event_loop()
                threading.Thread(target=loop.run_forever, name="egress-loop", daemon=True).start()
                _background.clear()  # a forked child starts its own
                _background[pid] = loop
    return asyncio.run_coroutine_threadsafe(coroutine, loop).result()
