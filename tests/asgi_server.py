"""``governance.asgi:application`` under uvicorn, in a thread of the test process: the routes
answered in front of Django (the inbox's stream) over real HTTP, on the test database, and
the notification bus shared with the services the test calls."""

import threading
import time
from contextlib import contextmanager

from django.conf import settings

from tests.faults import free_port


class InProcessServer:
    def __init__(self):
        import uvicorn

        from governance.asgi import application

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(
            application,
            host="127.0.0.1",
            port=self.port,
            lifespan="off",
            log_level="warning",
            timeout_graceful_shutdown=2,
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="asgi-test-server", daemon=True)

    def start(self) -> "InProcessServer":
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            assert self.thread.is_alive() and time.monotonic() < deadline, "the ASGI server did not start"
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)


@contextmanager
def running_server():
    """The server, for a test on the test database (``transactional_db``)."""
    server = InProcessServer().start()
    try:
        yield server
    finally:
        server.stop()


def session_cookie(person) -> dict:
    """A signed-in session for ``person`` (as the login page makes one): {cookie name: value}."""
    from django.test import Client

    client = Client()
    client.force_login(person)
    return {settings.SESSION_COOKIE_NAME: client.cookies[settings.SESSION_COOKIE_NAME].value}
