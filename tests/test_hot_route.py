"""The hot path's self-answering routes (``governance.hotpath.HotRoute``): path parameters,
admission, errors answered by the route itself, and the same service driven synchronously."""

import asyncio
import json
import threading

import pytest
from django.utils.asyncio import async_unsafe

from governance.hotpath import Cached, HotPath, HotRequest, HotRoute, InThread, drive

pytestmark = pytest.mark.postgres


def service(request: HotRequest):
    if request.params["name"] == "boom":
        raise ValueError("boom")
    doubled = yield InThread(lambda n: n * 2, len(request.body))
    return 202, {"name": request.params["name"], "doubled": doubled, "auth": request.headers.get("authorization")}


def errors(exc):
    return 418, {"error": type(exc).__name__}


ROUTE = HotRoute(path="/v1/things/{name}/do", method="POST", service=service, errors=errors)


async def django(scope, receive, send):
    await send({"type": "http.response.start", "status": 299, "headers": []})
    await send({"type": "http.response.body", "body": b"django"})


def call(path, body=b"{}", query=b"", headers=None, route=ROUTE):
    app = HotPath(django, [route])
    headers = headers or [
        (b"host", b"127.0.0.1"),
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"authorization", b"DPoP x"),
    ]
    scope = {"type": "http", "method": "POST", "path": path, "query_string": query, "headers": headers}
    sent = []

    async def receive():
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message):
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    status = sent[0]["status"]
    content = sent[1]["body"]
    return status, (json.loads(content) if status != 299 else content)


def test_a_route_answers_with_its_parameters_and_status():
    assert call("/v1/things/abc/do", b"{}") == (202, {"name": "abc", "doubled": 4, "auth": "DPoP x"})


def test_a_route_answers_its_own_errors_never_handing_them_to_django():
    assert call("/v1/things/boom/do") == (418, {"error": "ValueError"})


def test_what_the_route_does_not_admit_goes_to_django():
    assert call("/v1/things/abc/do", query=b"x=1") == (299, b"django")
    assert call("/v1/things/a/b/do")[0] == 299  # a parameter is one segment
    assert call("/v1/things/abc/do", headers=[(b"host", b"127.0.0.1"), (b"content-length", b"2")])[0] == 299


def test_drive_runs_the_same_service_synchronously():
    request = HotRequest("POST", "/v1/things/abc/do", {"name": "abc"}, {}, b"{}")
    assert drive(ROUTE, request) == (202, {"name": "abc", "doubled": 4, "auth": None})
    boom = HotRequest("POST", "/v1/things/boom/do", {"name": "boom"}, {}, b"{}")
    assert drive(ROUTE, boom) == (418, {"error": "ValueError"})


def recovering(request: HotRequest):
    try:
        yield InThread(int, "not a number")
    except ValueError:
        return 409, {"recovered": True}
    return 200, {}


def test_a_failed_step_is_thrown_back_into_the_service():
    route = HotRoute(path="/v1/r", method="POST", service=recovering, errors=errors)
    assert drive(route, HotRequest("POST", "/v1/r", {}, {}, b"{}")) == (409, {"recovered": True})
    app_route = HotRoute(path="/v1/things/{name}/do", method="POST", service=recovering, errors=errors)
    assert call("/v1/things/x/do", route=app_route) == (409, {"recovered": True})  # on the event loop too


@async_unsafe
def guarded_by_django():
    """What a database read looks like to the hot path: Django refuses it on the event loop."""
    return threading.get_ident()


def where_steps_run(request: HotRequest):
    here = threading.get_ident()
    in_memory = yield Cached(threading.get_ident)
    needs_database = yield Cached(guarded_by_django)
    return 200, {"cached_on_the_loop": in_memory == here, "database_in_a_thread": needs_database != here}


def test_a_cached_step_runs_on_the_loop_unless_it_needs_the_database():
    route = HotRoute(path="/v1/things/{name}/do", method="POST", service=where_steps_run, errors=errors)
    assert call("/v1/things/x/do", route=route) == (200, {"cached_on_the_loop": True, "database_in_a_thread": True})
    synchronous = drive(route, HotRequest("POST", "/v1/things/x/do", {"name": "x"}, {}, b"{}"))
    assert synchronous == (200, {"cached_on_the_loop": True, "database_in_a_thread": False})  # drive: one thread
