"""A hot path (``governance.hotpath.HotPath``) in front of an ASGI app for a test, torn down
cleanly: its pool threads hand their connections back before the test database goes, and
the declarations' group commits close theirs."""

import contextlib
import threading

from django.db import connections

from governance.hotpath import HotPath


@contextlib.contextmanager
def serving(app, declarations: list, threads: int = 2):
    route = HotPath(app, declarations, threads=threads)
    try:
        yield route
    finally:
        both = threading.Barrier(threads)  # each thread hands its connection back

        def close():
            both.wait(timeout=10)
            connections.close_all()

        for future in [route.executor.submit(close) for _ in range(threads)]:
            future.result()
        route.executor.shutdown()
        for declaration in declarations:
            if getattr(declaration, "group", None) is not None:
                declaration.group.close()
