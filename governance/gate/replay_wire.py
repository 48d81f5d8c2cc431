"""The DPoP replay check's Redis connection on the hot path's event loop: ``SET key 1 NX EX``
and nothing else, pipelined on one connection per event loop.

Why not redis-py's asyncio client: for each command it takes a connection from its pool and
runs its retry and observability wrappers and its stream reader, 50-90 µs of CPU per check
on this machine, against 12-20 µs here (docs/performance.md, "Gate execute"). The checks of one
turn of the loop are written together; Redis answers in order, so each one-line reply (``+OK``, ``$-1``, or an
error) belongs to the oldest check still waiting. Anything else, a lost connection, or a check
not answered within its timeout closes the connection, and every check waiting on it fails
(the caller answers 503: fail closed); the next check connects again. Only plain
``redis://`` URLs (host, port, database, user name, password) are spoken here; for any other
(TLS, a Unix socket, options) ``plain_target`` says no and redis-py does the check.
"""

import asyncio
import collections

from redis.asyncio.connection import parse_url

PLAIN_OPTIONS = frozenset({"host", "port", "db", "username", "password"})
MAX_PENDING_BYTES = 64 * 1024  # more unanswered bytes than any reply to SET: not Redis


class ReplyError(Exception):
    """Redis refused the command (an error reply) or answered something a SET cannot."""


def plain_target(url: str) -> dict | None:
    """``url``'s host, port, database and credentials when it is a plain ``redis://`` URL."""
    if not url.startswith("redis://"):
        return None
    try:
        options = parse_url(url)
    except ValueError:
        return None
    if set(options) - PLAIN_OPTIONS:
        return None
    return options


def command(*parts: bytes) -> bytes:
    """One command in RESP (an array of bulk strings)."""
    return b"".join([b"*%d\r\n" % len(parts), *(b"$%d\r\n%s\r\n" % (len(part), part) for part in parts)])


class _Protocol(asyncio.Protocol):
    """One connection: each command's future gets the next one-line reply."""

    def __init__(self):
        self.transport = None
        self.closed = False
        self.waiting: collections.deque[asyncio.Future] = collections.deque()
        self.pending = b""
        self.outgoing: list[bytes] = []  # commands of this turn of the loop, sent together

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        data = self.pending + data if self.pending else data
        start = 0
        while (end := data.find(b"\r\n", start)) >= 0:
            line = data[start:end]
            start = end + 2
            if not self.waiting or not (line[:1] in (b"+", b"-") or line == b"$-1"):
                self.fail(ReplyError("Redis answered something a SET cannot"))
                return
            future = self.waiting.popleft()
            if not future.done():  # its caller may have given up
                future.set_result(line)
        self.pending = data[start:]
        if len(self.pending) > MAX_PENDING_BYTES:
            self.fail(ReplyError("Redis answered something a SET cannot"))

    def connection_lost(self, exc):
        self.closed = True
        self._fail_waiting(ConnectionError("the connection to Redis was lost"))

    def send(self, payload: bytes) -> asyncio.Future:
        """The future of ``payload``'s reply. Commands sent in one turn of the loop go out in
        one write (each write to a socket costs a system call and the loopback's work)."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self.waiting.append(future)
        if not self.outgoing:
            loop.call_soon(self._flush)
        self.outgoing.append(payload)
        return future

    def _flush(self):
        outgoing, self.outgoing = self.outgoing, []
        if not self.closed:
            self.transport.write(b"".join(outgoing))

    def fail(self, exc: Exception):
        self.closed = True
        if self.transport is not None:
            self.transport.close()
        self._fail_waiting(exc)

    def _fail_waiting(self, exc: Exception):
        while self.waiting:
            future = self.waiting.popleft()
            if not future.done():
                future.set_exception(exc)


class ReplayConnection:
    """``set_once`` over one pipelined connection of the running loop, opened when needed."""

    def __init__(self, target: dict, timeout: float):
        self.target, self.timeout = target, timeout
        self._protocol: _Protocol | None = None
        self._opening: asyncio.Lock | None = None

    async def set_once(self, key: bytes, seconds: int) -> bool:
        """``SET key 1 NX EX seconds``: True when the key was set, False when it existed.
        ReplyError, OSError (ConnectionError) or TimeoutError otherwise."""
        payload = command(b"SET", key, b"1", b"NX", b"EX", b"%d" % seconds)
        protocol = self._protocol
        try:
            async with asyncio.timeout(self.timeout):
                if protocol is None or protocol.closed:
                    protocol = await self._connected()
                reply = await protocol.send(payload)
        except TimeoutError:
            if protocol is not None:
                protocol.fail(TimeoutError("Redis did not answer in time"))  # replies would come out of turn
            raise
        if reply == b"+OK":
            return True
        if reply == b"$-1":
            return False
        raise ReplyError(reply[1:200].decode("utf-8", "replace"))

    async def _connected(self) -> _Protocol:
        if self._opening is None:
            self._opening = asyncio.Lock()
        async with self._opening:
            if self._protocol is None or self._protocol.closed:
                self._protocol = await self._open()
            return self._protocol

    async def _open(self) -> _Protocol:
        target = self.target
        loop = asyncio.get_running_loop()
        _, protocol = await loop.create_connection(_Protocol, target.get("host", "localhost"), target.get("port", 6379))
        handshake = []
        if target.get("password"):
            user = [target["username"].encode()] if target.get("username") else []
            handshake.append(command(b"AUTH", *user, target["password"].encode()))
        if target.get("db"):
            handshake.append(command(b"SELECT", b"%d" % target["db"]))
        try:
            for reply in await asyncio.gather(*(protocol.send(payload) for payload in handshake)):
                if reply != b"+OK":
                    raise ReplyError(reply[1:200].decode("utf-8", "replace"))
        except BaseException:
            protocol.fail(ConnectionError("the connection to Redis could not be set up"))
            raise
        return protocol
