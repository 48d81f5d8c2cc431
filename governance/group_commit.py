"""Group commit for the writes of the hot path (``governance.hotpath``).

Every hot write appends to the one evidence ledger, so it takes the ledger head's row lock,
which is held until the commit's WAL flush is done: one write at a time, each waiting for
its own flush. Under load that lock, not the CPU, sets the pace.

A :class:`GroupCommit` has one writer thread per process. Callers hand over an item and
wait; the writer takes every item waiting at that moment (up to ``max_batch``) and passes
them to the endpoint's recorder, one statement for all of them: one lock, one commit, one
flush. Nothing waits for a batch to fill: a lone item is written alone at once.

What does not change: each item is written atomically by that statement, and its caller
hears back only after the commit, with a result of its own. If the statement fails, each
item of the batch is written alone, so one bad item cannot fail the others.
"""

import asyncio
import contextlib
import logging
import queue
import threading
from dataclasses import dataclass

from django.core.exceptions import ImproperlyConfigured
from django.db import DatabaseError, InterfaceError, OperationalError, connection

try:
    from django.db.backends.postgresql.base import ServerBindingCursor
except (ImportError, ImproperlyConfigured):  # no psycopg 3: SQLite only
    ServerBindingCursor = None

logger = logging.getLogger(__name__)


@dataclass
class _Pending:
    item: object
    done: threading.Event | None = None  # a thread waits on it...
    future: asyncio.Future | None = None  # ...or a coroutine awaits this
    result: object = None  # a recorder never answers None for an item
    error: BaseException | None = None

    @property
    def settled(self) -> bool:
        return self.result is not None or self.error is not None


def _settle_future(pending: _Pending) -> None:
    if pending.future.done():  # the caller went away
        return
    if pending.error is not None:
        pending.future.set_exception(pending.error)
    else:
        pending.future.set_result(pending.result)


def _settle_futures(batch: list[_Pending]) -> None:
    for pending in batch:
        _settle_future(pending)


def _deliver(batch: list[_Pending]) -> None:
    """Wake the callers of the settled items: threads one by one, coroutines with one
    callback per event loop."""
    by_loop: dict = {}
    for pending in batch:
        if not pending.settled:
            continue  # retried alone, delivered then
        if pending.done is not None:
            pending.done.set()
        elif pending.future is not None:
            by_loop.setdefault(pending.future.get_loop(), []).append(pending)
    for loop, items in by_loop.items():
        with contextlib.suppress(RuntimeError):  # a closed loop: nobody is waiting any more
            loop.call_soon_threadsafe(_settle_futures, items)


class GroupCommit:
    """Writes the items handed to it with ``recorder(items) -> [result per item]`` (the
    endpoint's one-statement write), in batches of at most ``max_batch``."""

    def __init__(self, recorder, max_batch: int = 64, name: str = "group-commit"):
        self.recorder = recorder
        self.max_batch = max_batch
        self.name = name
        self._queue: queue.SimpleQueue[_Pending] = queue.SimpleQueue()
        self._writer: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self.batches = 0  # statements written (tests, the benchmark's report)
        self.recorded = 0

    def record(self, item):
        """Write ``item`` with the next batch; its result once committed."""
        pending = _Pending(item, done=threading.Event())
        self._ensure_writer()
        self._queue.put(pending)
        pending.done.wait()
        if pending.error is not None:
            raise pending.error
        return pending.result

    async def record_async(self, item):
        """The same for a coroutine: the event loop is not blocked while the batch is written."""
        pending = _Pending(item, future=asyncio.get_running_loop().create_future())
        self._ensure_writer()
        self._queue.put(pending)
        return await pending.future

    def _ensure_writer(self) -> None:
        if self._writer is not None and self._writer.is_alive():
            return
        with self._start_lock:
            if self._writer is None or not self._writer.is_alive():
                self._writer = threading.Thread(target=self._run, name=self.name, daemon=True)
                self._writer.start()

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if callable(first):  # a task for the writer's own thread (close)
                first()
                continue
            batch = [first]
            while len(batch) < self.max_batch:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if callable(item):
                    self._queue.put(item)  # after this batch
                    break
                batch.append(item)
            self._write(batch)

    def _write(self, batch: list[_Pending]) -> None:
        try:
            try:
                results = self.recorder([p.item for p in batch])
            except DatabaseError:
                self._recover()
                if len(batch) == 1:
                    raise
                logger.warning("%s: a batch of %d failed; writing them one by one", self.name, len(batch))
                for pending in batch:
                    self._write([pending])
                return
            self.batches += 1
            self.recorded += len(batch)
            for pending, result in zip(batch, results, strict=True):
                pending.result = result
        except BaseException as exc:  # noqa: BLE001 (handed to the waiting callers)
            for pending in batch:
                if pending.result is None and pending.error is None:
                    pending.error = exc
        finally:
            _deliver(batch)

    @staticmethod
    def _recover() -> None:
        """After a failed statement: drop a broken connection so the next batch reconnects."""
        try:
            connection.close_if_unusable_or_obsolete()
        except (InterfaceError, OperationalError):
            connection.close()

    def close(self) -> None:
        """Hand the writer thread's connection back (tests, shutdown); the thread stays."""
        if self._writer is None or not self._writer.is_alive():
            return
        done = threading.Event()

        def close_connection():
            try:
                connection.close()
            finally:
                done.set()

        self._queue.put(close_connection)
        done.wait(10)


class _PreparedCursor(ServerBindingCursor if ServerBindingCursor is not None else object):
    """Server-side parameters (a batch's JSON goes as is, not quoted into the SQL text) and a
    prepared statement per connection (parsed and planned once)."""

    def execute(self, query, params=None, *, prepare=None, binary=None):
        return super().execute(query, params, prepare=True, binary=binary)


def prepared_cursor():
    """A cursor for a recorder's one statement on PostgreSQL (``_PreparedCursor``), wrapped
    as Django wraps its own (query logging, ``CaptureQueriesContext``)."""
    connection.ensure_connection()
    return connection._prepare_cursor(_PreparedCursor(connection.connection))
