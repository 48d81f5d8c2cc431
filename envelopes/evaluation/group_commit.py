"""Group commit for evaluations recorded by the fast route (``envelopes/evaluation/fastroute.py``).

Every evaluation appends to the one ledger, so its recording takes the ledger head's row
lock, which is held until the commit's WAL flush is done: one evaluation at a time, each
waiting for its own flush. Under load that lock, not the CPU, sets the pace.

A :class:`GroupCommit` has one writer thread per process. Threads that have decided an
evaluation hand it over and wait; the writer takes every evaluation waiting at that moment
(up to ``max_batch``) and records them with one ``mandate_record_evaluations`` statement:
one lock, one commit, one flush for all of them. Nothing waits for a batch to fill: when
a single evaluation is waiting it is written alone at once, so at low load this is the
plain one-statement write.

What does not change: each evaluation's envelope and events are written together, by one
atomic statement, and the caller answers only after that statement has committed (so
after the WAL flush), with a status of its own (recorded, duplicate, stale, token no
longer valid). If the statement fails, each evaluation of the batch is retried alone, so
one bad evaluation cannot fail the others.
"""

import asyncio
import contextlib
import logging
import queue
import threading
from dataclasses import dataclass

from django.db import DatabaseError, InterfaceError, OperationalError, connection

from envelopes.evaluation.engine import record_many

logger = logging.getLogger(__name__)


@dataclass
class _Pending:
    planned: object
    revision: int
    token: dict | None
    done: threading.Event | None = None  # a thread waits on it...
    future: asyncio.Future | None = None  # ...or a coroutine awaits this
    result: dict | None = None
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
    def __init__(self, max_batch: int = 64):
        self.max_batch = max_batch
        self._queue: queue.SimpleQueue[_Pending] = queue.SimpleQueue()
        self._writer: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self.batches = 0  # statements written (for the benchmark's report)
        self.recorded = 0

    def record(self, planned, revision: int, token: dict | None) -> dict:
        """Record ``planned`` (with the next batch); its status once committed."""
        pending = _Pending(planned, revision, token, done=threading.Event())
        self._ensure_writer()
        self._queue.put(pending)
        pending.done.wait()
        if pending.error is not None:
            raise pending.error
        return pending.result

    async def record_async(self, planned, revision: int, token: dict | None) -> dict:
        """The same for a coroutine: the event loop is not blocked while the batch is written."""
        pending = _Pending(planned, revision, token, future=asyncio.get_running_loop().create_future())
        self._ensure_writer()
        self._queue.put(pending)
        return await pending.future

    def _ensure_writer(self) -> None:
        if self._writer is not None and self._writer.is_alive():
            return
        with self._start_lock:
            if self._writer is None or not self._writer.is_alive():
                self._writer = threading.Thread(target=self._run, name="evaluate-group-commit", daemon=True)
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
                results = record_many([(p.planned, p.revision, p.token) for p in batch])
            except DatabaseError:
                self._recover()
                if len(batch) == 1:
                    raise
                logger.warning("group commit of %d evaluations failed; recording them one by one", len(batch))
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
