"""``GET /v1/agents`` and ``GET /v1/surfaces``: the organization's agents and surfaces, each item
exactly what the single-item GET answers, as a plain array (capped) or in pages."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from controlplane.models import Process
from controlplane.services import listing
from governance.choices import Role
from governance.cursors import encode_cursor
from governance.services.people import ensure_organization
from tests import factories
from tests.test_controlplane_introspection import AGENT_FIELDS, SURFACE_FIELDS

pytestmark = pytest.mark.django_db

LISTS = {"/v1/agents": "/v1/agents/{id}", "/v1/surfaces": "/v1/surfaces/{id}"}


@pytest.fixture
def viewer(client_with):
    return client_with(Role.PLATFORM_VIEWER)


@pytest.fixture
def other_organization(db):
    return ensure_organization("globex", "Globex")


def declare(organization, *keys, versions=1):
    process = Process.objects.filter(organization=organization).first() or factories.process(organization)
    for key in keys:
        factories.agent(organization, key=f"agent-{key}", owner="alice")
        for version in range(1, versions + 1):
            status = "active" if version == 1 else "review"
            factories.surface(organization, key=f"surf-{key}", version=version, status=status, process_=process)


def ids(rows) -> list[str]:
    return [row["id"] for row in rows]


# --- the lists ------------------------------------------------------------------------------


@pytest.mark.parametrize("path", LISTS)
def test_each_item_is_what_the_single_item_get_answers(viewer, organization, path):
    declare(organization, "b", "a", "c")
    response = viewer.get(path)
    assert response.status_code == 200
    rows = response.json()
    assert len(rows) == 3
    for row in rows:
        assert row == viewer.get(LISTS[path].format(id=row["id"])).json()


def test_agents_have_the_reference_fields_ordered_by_id(viewer, organization):
    declare(organization, "b", "a")
    rows = viewer.get("/v1/agents").json()
    assert ids(rows) == ["agent-a", "agent-b"]
    assert all(set(row) == AGENT_FIELDS for row in rows)


def test_surfaces_are_the_latest_version_of_each_ordered_by_id(viewer, organization):
    declare(organization, "b", "a", versions=2)
    rows = viewer.get("/v1/surfaces").json()
    assert ids(rows) == ["surf-a", "surf-b"]
    assert all(set(row) == SURFACE_FIELDS for row in rows)
    assert [(row["version"], row["status"]) for row in rows] == [(2, "review"), (2, "review")]


def test_an_organization_with_none_answers_an_empty_array(viewer):
    assert viewer.get("/v1/agents").json() == []
    assert viewer.get("/v1/surfaces").json() == []


@pytest.mark.parametrize("path", LISTS)
def test_another_organizations_agents_and_surfaces_are_invisible(viewer, organization, other_organization, path):
    declare(organization, "mine")
    declare(other_organization, "theirs", "mine")  # the same ids in another organization too
    rows = viewer.get(path).json()
    assert len(rows) == 1 and rows[0]["id"].endswith("-mine")
    assert viewer.get(f"{path}?limit=10").json()["items"] == rows


def test_filters_ask_about_the_latest_version(viewer, organization):
    declare(organization, "a", "b", versions=2)
    factories.surface(organization, key="surf-c", status="active", risk_tier="high")
    assert ids(viewer.get("/v1/surfaces?status=review").json()) == ["surf-a", "surf-b"]
    assert ids(viewer.get("/v1/surfaces?status=active").json()) == ["surf-c"]
    assert ids(viewer.get("/v1/surfaces?risk_tier=high").json()) == ["surf-c"]


def test_agents_filter_by_type_owner_and_state(viewer, organization):
    factories.agent(organization, key="agent-bot", type="service", owner="bob", operational_state="suspended")
    factories.agent(organization, key="agent-llm", type="ai", owner="alice")
    assert ids(viewer.get("/v1/agents?type=service").json()) == ["agent-bot"]
    assert ids(viewer.get("/v1/agents?owner=alice").json()) == ["agent-llm"]
    assert ids(viewer.get("/v1/agents?operational_state=suspended").json()) == ["agent-bot"]


@pytest.mark.parametrize(
    "path", ["/v1/agents?type=robot", "/v1/agents?operational_state=asleep", "/v1/surfaces?status=live"]
)
def test_a_filter_value_it_cannot_take_is_400(viewer, path):
    response = viewer.get(path)
    assert response.status_code == 400
    assert "error" in response.json()


# --- pages ----------------------------------------------------------------------------------


@pytest.mark.parametrize("path", LISTS)
def test_pages_walk_every_item_once_in_order(viewer, organization, path):
    declare(organization, *[f"{n:02}" for n in range(7)], versions=2)
    seen, cursor, pages = [], "", 0
    while True:
        query = f"{path}?limit=3" + (f"&cursor={cursor}" if cursor else "")
        page = viewer.get(query).json()
        assert set(page) == {"items", "next_cursor"}
        seen += ids(page["items"])
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert pages == 3
    assert seen == ids(viewer.get(path).json()) and len(seen) == 7


def test_a_page_keeps_the_filters(viewer, organization):
    declare(organization, "a", "b", "c")
    factories.agent(organization, key="agent-z", owner="zed")
    page = viewer.get("/v1/agents?owner=alice&limit=2").json()
    assert ids(page["items"]) == ["agent-a", "agent-b"]
    rest = viewer.get(f"/v1/agents?owner=alice&limit=2&cursor={page['next_cursor']}").json()
    assert ids(rest["items"]) == ["agent-c"] and rest["next_cursor"] is None


def test_cursor_alone_gives_a_page_of_the_default_size(viewer, organization):
    declare(organization, "a", "b")
    page = viewer.get(f"/v1/agents?cursor={encode_cursor(['agent-a'])}").json()
    assert page == {"items": [viewer.get("/v1/agents/agent-b").json()], "next_cursor": None}


@pytest.mark.parametrize("path", LISTS)
@pytest.mark.parametrize("cursor", ["not-base64!", encode_cursor([1]), encode_cursor(["Upper"]), encode_cursor([])])
def test_a_cursor_that_does_not_decode_is_400(viewer, path, cursor):
    response = viewer.get(f"{path}?cursor={cursor}")
    assert response.status_code == 400
    assert response.json() == {"error": "invalid cursor"}


@pytest.mark.parametrize("limit", ["0", "501", "abc", "-1"])
def test_a_bad_limit_is_400(viewer, limit):
    response = viewer.get(f"/v1/surfaces?limit={limit}")
    assert response.status_code == 400
    assert response.json() == {"error": "limit must be an integer between 1 and 500"}


@pytest.mark.parametrize("path", LISTS)
def test_the_plain_array_is_capped_and_says_so(viewer, organization, monkeypatch, path):
    declare(organization, "a", "b", "c")
    monkeypatch.setattr(listing, "PLAIN_LIST_CAP", 2)
    response = viewer.get(path)
    assert len(response.json()) == 2 and response["X-Mandate-Truncated"] == "true"
    monkeypatch.setattr(listing, "PLAIN_LIST_CAP", 3)
    assert "X-Mandate-Truncated" not in viewer.get(path)


# --- who, and what it costs -----------------------------------------------------------------


@pytest.mark.parametrize("path", LISTS)
def test_without_credentials_is_401_and_without_a_platform_role_403(api_client, client_with, path):
    assert api_client.get(path).status_code == 401
    response = client_with(Role.GOVERNANCE_APPROVER).get(path)
    assert response.status_code == 403
    assert response.json() == {"error": "forbidden", "required_permission": "controlplane:read"}


@pytest.mark.parametrize("path", [*LISTS, "/v1/agents?limit=5", "/v1/surfaces?limit=5&status=review"])
def test_query_count_does_not_grow_with_rows(viewer, organization, path):
    declare(organization, "a", versions=2)

    def queries():
        with CaptureQueriesContext(connection) as captured:
            assert viewer.get(path).status_code == 200
        return len(captured)

    few = queries()
    declare(organization, *"bcdefgh", versions=2)
    assert queries() == few <= 3  # token, organization, the list


def test_the_schema_documents_both_answers_and_the_parameters(client):
    schema = client.get("/api/schema/", HTTP_ACCEPT="application/json").json()
    for path, kind in (("/v1/agents", "Agent"), ("/v1/surfaces", "Surface")):
        operation = schema["paths"][path]["get"]
        names = {parameter["name"] for parameter in operation["parameters"]}
        assert {"limit", "cursor"} <= names
        answer = operation["responses"]["200"]["content"]["application/json"]["schema"]
        assert answer == {"$ref": f"#/components/schemas/{kind}List"}
        shapes = schema["components"]["schemas"][f"{kind}List"]["oneOf"]
        assert {"type": "array", "items": {"$ref": f"#/components/schemas/{kind}"}} in shapes
        assert {"$ref": f"#/components/schemas/{kind}Page"} in shapes
    assert {"type", "owner", "operational_state"} <= {
        parameter["name"] for parameter in schema["paths"]["/v1/agents"]["get"]["parameters"]
    }
