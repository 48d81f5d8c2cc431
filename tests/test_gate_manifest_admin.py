"""Action manifests edited in the console: validated whole, written to their file, reloaded for
every process; a bad one changes nothing."""

import pytest
import yaml
from django.test import override_settings

from controlplane.gate.registry import registry, reload
from governance.choices import Role
from tests.gate_actions import copy_actions

pytestmark = pytest.mark.django_db


@pytest.fixture
def actions(tmp_path):
    directory = copy_actions(tmp_path)
    with override_settings(MANDATE_ACTIONS_DIR=directory):
        reload()
        yield directory


@pytest.fixture
def operator(client, make_person):
    client.force_login(make_person(roles=[Role.PLATFORM_OPERATOR], username="oscar"))
    return client


def edit_url(action_id):
    return f"/admin/controlplane/actionmanifest/edit/{action_id}/"


def test_an_operator_edits_a_manifest_and_every_process_sees_it(operator, actions):
    page = operator.get(edit_url("http_fetch"))
    assert page.status_code == 200 and "action_id: http_fetch" in page.content.decode()
    document = yaml.safe_load((actions / "http_fetch.yaml").read_text())
    document["description"] = "Fetch a URL (edited in the console)."
    response = operator.post(edit_url("http_fetch"), {"manifest": yaml.safe_dump(document)})
    assert response.status_code == 302
    assert registry().get("http_fetch").description == "Fetch a URL (edited in the console)."
    assert "edited in the console" in (actions / "http_fetch.yaml").read_text()
    listing = operator.get("/admin/controlplane/actionmanifest/").content.decode()
    assert "http_fetch" in listing and "Edit YAML" in listing


def test_a_bad_manifest_changes_nothing_and_says_why(operator, actions):
    before = (actions / "http_fetch.yaml").read_text()
    bad = before.replace("risk_level: low", "risk_level: extreme")
    response = operator.post(edit_url("http_fetch"), {"manifest": bad})
    assert response.status_code == 400 and "risk_level" in response.content.decode()
    assert (actions / "http_fetch.yaml").read_text() == before
    assert registry().get("http_fetch").risk_level == "low"
    renamed = before.replace("action_id: http_fetch", "action_id: other")
    assert operator.post(edit_url("http_fetch"), {"manifest": renamed}).status_code == 400


def test_a_new_action_is_added_from_the_console(operator, actions):
    document = yaml.safe_load((actions / "http_fetch.yaml").read_text())
    document["action_id"] = "weather_fetch"
    response = operator.post("/admin/controlplane/actionmanifest/new/", {"manifest": yaml.safe_dump(document)})
    assert response.status_code == 302 and registry().get("weather_fetch") is not None
    assert (actions / "weather_fetch.yaml").exists()


def test_only_operators_edit_manifests(client, make_person, actions):
    client.force_login(make_person(roles=[Role.PLATFORM_VIEWER], username="vera"))
    assert client.get(edit_url("http_fetch")).status_code == 403
