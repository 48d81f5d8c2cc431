"""The steps a hot path service yields (``governance.hotpath`` drives them): kept apart from
the hot path itself so services can yield them without importing anything of the API."""

from collections.abc import Callable


class InThread:
    """A service step that may query: ``function(*args)`` runs in the hot path's thread
    pool and its result is sent back into the service."""

    __slots__ = ("args", "function")

    def __init__(self, function: Callable, *args):
        self.function, self.args = function, args


class Cached(InThread):
    """A step that usually finds what it needs in this process's memory (the gate's state,
    the catalogue, the policy snapshot: caches re-checked at most every second). The hot
    path runs it on the event loop, without a thread hop; when it turns out to need the
    database after all, Django refuses the query on the loop before any I/O
    (``SynchronousOnlyOperation``) and the step runs again in a pool thread. So a Cached
    step must do no other I/O (Redis, HTTP, files: those are InThread steps) and nothing
    before its first query that it could not do twice."""

    __slots__ = ()


class OnLoop(InThread):
    """A step that waits on the network without blocking: the hot path awaits
    ``coroutine(*args)`` on its event loop; a driver that blocks (Django's view) calls
    ``function(*args)``, its blocking twin, which must do the same."""

    __slots__ = ("coroutine",)

    def __init__(self, function: Callable, coroutine: Callable, *args):
        super().__init__(function, *args)
        self.coroutine = coroutine


class Write:
    """A service's write: ``item`` goes to the endpoint's recorder with the next group
    commit, and the recorder's result for it is sent back into the service."""

    __slots__ = ("item",)

    def __init__(self, item):
        self.item = item
