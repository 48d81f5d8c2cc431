import pytest

from governance.choices import Role

pytestmark = [pytest.mark.django_db, pytest.mark.urls("tests.probe_urls")]


@pytest.fixture
def operator(client_with):
    return client_with(Role.PLATFORM_OPERATOR)


def test_malformed_json_is_400_with_error(operator):
    response = operator.post("/v1/probe/echo", data='{"name": "x",', content_type="application/json")
    assert response.status_code == 400
    body = response.json()
    assert set(body) == {"error"}
    assert body["error"].startswith("malformed request body")


def test_wrong_content_type_is_415(operator):
    response = operator.post("/v1/probe/echo", data="name=x", content_type="application/x-www-form-urlencoded")
    assert response.status_code == 415
    assert set(response.json()) == {"error"}


def test_body_over_the_default_limit_is_413(operator, settings):
    settings.MANDATE_MAX_BODY_BYTES = 1000
    response = operator.post("/v1/probe/echo", data='{"name": "' + "x" * 2000 + '"}', content_type="application/json")
    assert response.status_code == 413
    assert "too large" in response.json()["error"]


def test_body_limit_is_configurable_per_endpoint(operator):
    body = '{"name": "abc", "count": 1, "pad": "' + "x" * 100 + '"}'
    assert operator.post("/v1/probe/echo", data=body, content_type="application/json").status_code == 200
    response = operator.post("/v1/probe/small", data=body, content_type="application/json")
    assert response.status_code == 413
    assert response.json() == {"error": "request body too large (limit 64 bytes)"}


def test_validation_errors_name_the_field(operator):
    response = operator.post("/v1/probe/echo", {"name": "x" * 20, "count": -1}, format="json")
    assert response.status_code == 400
    error = response.json()["error"]
    assert "name:" in error and "count:" in error


def test_unknown_api_route_is_404_json(operator, client):
    for path in ("/v1/nope", "/api/nope/deeper", "/governance/nothing", "/v1"):
        response = client.get(path)
        assert response.status_code == 404, path
        assert response["Content-Type"] == "application/json"
        assert "error" in response.json()


def test_wrong_method_is_405_with_error(operator):
    response = operator.delete("/v1/probe/echo")
    assert response.status_code == 405
    assert set(response.json()) == {"error"}


def test_crash_in_an_api_view_answers_json_500_without_traceback(client):
    client.raise_request_exception = False
    response = client.get("/v1/probe/crash")
    assert response.status_code == 500
    assert response.json() == {"error": "internal error"}


@pytest.mark.parametrize(
    "payload",
    ["", "null", "[]", '"string"', "1e999", '{"name": null}', "\x00", '{"name": "\\ud800"}', "{" * 5000],
)
def test_odd_bodies_never_500(operator, payload):
    response = operator.post("/v1/probe/echo", data=payload, content_type="application/json")
    assert response.status_code in (200, 400, 413), response.content
    assert "error" in response.json()


@pytest.mark.parametrize("method", ["get", "post", "put", "patch", "delete"])
def test_unknown_api_route_is_the_same_json_404_for_every_method(method):
    from django.test import Client

    client = Client(enforce_csrf_checks=True)
    body = {} if method == "get" else {"data": "{}", "content_type": "application/json"}
    response = getattr(client, method)("/v1/no-such-thing", **body)
    assert response.status_code == 404
    assert response["Content-Type"] == "application/json"
    assert response.json() == {"error": f"no route for {method.upper()} /v1/no-such-thing"}
