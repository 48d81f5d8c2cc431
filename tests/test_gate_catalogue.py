"""The action catalogue: manifests validated whole (each kind of error names its file and
field), module digests checked at load, reloads all or nothing and seen by every process,
and the discovery endpoints' exact shapes."""

import copy
import hashlib
from dataclasses import replace

import pytest
import wasmtime
from django.test import override_settings

from controlplane.gate import audit, state
from controlplane.gate.manifests import ManifestError, Trust, parse_manifest, read_manifest_file
from controlplane.gate.registry import actions_dir, read_catalogue, registry, reload
from controlplane.gate.rego import PolicyError
from controlplane.models import ActionManifest, PolicyState
from evidence.models import AuditEvent, ControlPlaneAuditRecord
from tests.gate_actions import SHIPPED, copy_actions, http_manifest, read_manifest, write_manifest

pytestmark = pytest.mark.django_db

SHIPPED_ACTIONS = ["echo_wasm", "fs_list", "fs_read", "fs_write", "http_delete", "http_fetch", "http_post"]


@pytest.fixture
def actions(tmp_path):
    """A writable copy of the shipped actions, as MANDATE_ACTIONS_DIR."""
    directory = copy_actions(tmp_path)
    with override_settings(MANDATE_ACTIONS_DIR=directory):
        yield directory


def problems_of(document: dict, source="probe.yaml") -> str:
    with pytest.raises(ManifestError) as raised:
        parse_manifest(document, source=source)
    return str(raised.value)


# --- the shipped set -----------------------------------------------------------------------------


def test_the_shipped_catalogue_loads_every_action_trusted():
    catalogue = registry()
    assert sorted(catalogue.manifests) == SHIPPED_ACTIONS
    assert all(manifest.digest_ok for manifest in catalogue.all())
    assert {m.action_id: m.trust for m in catalogue.all() if not m.is_builtin} == {"echo_wasm": Trust.DIGEST_OK}
    echo = catalogue.get("echo_wasm")
    module = (SHIPPED / "modules" / "echo.wasm").read_bytes()
    assert echo.module_bytes == module
    assert echo.provider_module_digest == "sha256:" + hashlib.sha256(module).hexdigest()
    assert ActionManifest.objects.filter(active=True).count() == len(SHIPPED_ACTIONS)


def test_the_echo_module_is_the_compiled_wat_source():
    wat = (SHIPPED / "modules" / "echo.wat").read_text()
    assert wasmtime.wat2wasm(wat) == (SHIPPED / "modules" / "echo.wasm").read_bytes()


def test_defaults_are_filled_in_as_issue_12_lists_them():
    manifest = parse_manifest(http_manifest(), source="probe.yaml")
    assert manifest.io.max_request_bytes == 64 * 1024
    assert manifest.io.max_response_bytes == 1024 * 1024
    assert manifest.required_scopes == ("tools:call",)
    assert manifest.verifier_kind == "none"
    assert manifest.secrets == ()
    assert manifest.egress.allowed_methods == ("GET",)  # the template's method
    assert manifest.template.placeholders == frozenset({"url"})
    fs = parse_manifest(read_manifest("fs_read.yaml"), source="fs_read.yaml")
    assert fs.egress.profile == "none"
    assert fs.fs.denied_paths[0] == "**/.env"


def test_latchgate_import_names_are_accepted_as_aliases():
    manifest = parse_manifest(http_manifest(required_imports=["latchgate:io/http", "latchgate:io/log"]), source="x")
    assert manifest.required_imports == ("mandate:http", "mandate:log")


def test_the_request_validator_names_the_field_at_fault():
    manifest = registry().get("http_fetch")
    assert manifest.request_problem({"url": "https://api.github.com/"}) is None
    assert manifest.request_problem({"url": 5}) == "url: 5 is not of type 'string'"
    assert "Additional properties" in manifest.request_problem({"url": "https://x.example", "extra": 1})
    assert manifest.request_problem(["url"]) == "the request body must be a JSON object"


# --- validation: each kind of error names file and field ---------------------------------------------

SCHEMA_ERRORS = [
    ("missing field", lambda d: d.pop("risk_level"), "probe.yaml: risk_level: is required"),
    ("unknown field", lambda d: d.update(colour="red"), "probe.yaml: colour: is not a manifest field"),
    (
        "nested unknown field",
        lambda d: d["egress"].update(proxy="squid"),
        "probe.yaml: egress.proxy: is not a manifest field",
    ),
    ("bad enum", lambda d: d.update(risk_level="extreme"), "probe.yaml: risk_level: 'extreme' is not one of"),
    ("wrong type", lambda d: d.update(version=1), "probe.yaml: version: 1 is not of type 'string'"),
    (
        "limit out of bounds",
        lambda d: d.update(io={**d["io"], "max_request_bytes": 2 * 1024 * 1024}),
        "probe.yaml: io.max_request_bytes: 2097152 is greater than the maximum of 1048576",
    ),
    (
        "bad secret name",
        lambda d: d.update(secrets=[{"name": "api token"}]),
        "probe.yaml: secrets[0].name: 'api token' does not match",
    ),
    (
        "bad scope",
        lambda d: d.update(required_scopes=["Tools"]),
        "probe.yaml: required_scopes[0]: 'Tools' does not match",
    ),
]

SEMANTIC_ERRORS = [
    (
        "digest not hex",
        lambda d: d.update(provider_module_digest="sha256:abc"),
        "provider_module_digest: must be 'sha256:' and 64 lower-case hex digits",
    ),
    (
        "unknown builtin",
        lambda d: d.update(provider_module_digest="builtin:ftp"),
        "provider_module_digest: unknown builtin 'builtin:ftp'",
    ),
    (
        "request schema not a JSON Schema",
        lambda d: d["io"].update(request_schema={"type": "objec"}),
        "io.request_schema.type: is not a valid JSON Schema",
    ),
    (
        "request schema not an object",
        lambda d: d["io"].update(request_schema={"type": "array"}),
        "io.request_schema.type: must be 'object'",
    ),
    (
        "placeholder not a property",
        lambda d: d["template"].update(url_template="{{uri}}"),
        "template.url_template: '{{uri}}' is not a property of io.request_schema",
    ),
    (
        "url placeholder optional",
        lambda d: d["io"]["request_schema"].update(required=[]),
        "template.url_template: '{{url}}' must be a required property of io.request_schema",
    ),
    (
        "malformed placeholder",
        lambda d: d["template"].update(headers={"X-Trace": "{{a b}}"}),
        "template.headers.X-Trace: '{{a b}}' is not a placeholder",
    ),
    (
        "undeclared secret",
        lambda d: d["template"].update(headers={"Authorization": "Bearer {{secret.TOKEN}}"}),
        "template.headers.Authorization: '{{secret.TOKEN}}' names a secret the manifest does not declare",
    ),
    (
        "reserved header",
        lambda d: d["template"].update(headers={"Host": "evil.example"}),
        "template.headers.Host: is set by the HTTP client",
    ),
    (
        "side effect not declared",
        lambda d: d["template"].update(method="POST"),
        "declared_side_effects: must include http_write (method POST)",
    ),
    (
        "http without egress",
        lambda d: d.update(egress={"profile": "none"}),
        "egress.profile: must be proxy_allowlist for an action that makes HTTP calls",
    ),
    (
        "over-broad allowed domain",
        lambda d: d["egress"].update(allowed_domains=["*.com"]),
        "egress.allowed_domains[0]: '*.com' is over-broad",
    ),
    (
        "template method not allowed",
        lambda d: d["egress"].update(allowed_methods=["POST"]),
        "egress.allowed_methods: must include the template's method GET",
    ),
    (
        "builtin http without template",
        lambda d: d.pop("template"),
        "template: is required for builtin:http_api",
    ),
    (
        "fs section on an http action",
        lambda d: d.update(fs={"allowed_operations": ["read"]}),
        "fs: only builtin:fs reads and writes files",
    ),
    (
        "wrong verifier",
        lambda d: d.update(verifier_kind="fs_hash"),
        "verifier_kind: fs_hash verifies builtin:fs actions only",
    ),
    (
        "unknown verifier setting",
        lambda d: d.update(verifier_kind="http_status", verification_config={"retries": 3}),
        "verification_config.retries: is not a setting of the http_status verifier",
    ),
    (
        "bad expected status",
        lambda d: d.update(verifier_kind="http_status", verification_config={"expected_status": [700]}),
        "verification_config.expected_status: must be a non-empty list of HTTP statuses",
    ),
    (
        "secret declared twice",
        lambda d: d.update(secrets=[{"name": "TOKEN"}, {"name": "TOKEN"}]),
        "secrets[1].name: 'TOKEN' is declared twice",
    ),
    (
        "module on a builtin",
        lambda d: d.update(module="modules/echo.wasm"),
        "module: only a sha256: provider runs a module",
    ),
]


@pytest.mark.parametrize(("case", "change", "message"), SCHEMA_ERRORS + SEMANTIC_ERRORS, ids=lambda v: v)
def test_an_invalid_manifest_is_refused_naming_the_file_and_field(case, change, message):
    document = copy.deepcopy(http_manifest())
    change(document)
    assert message in problems_of(document)


def test_fs_globs_are_relative_and_cannot_climb_out():
    document = read_manifest("fs_read.yaml")
    document["fs"]["allowed_paths"] = ["/etc/**", "docs/../../x"]
    text = problems_of(document, "fs_read.yaml")
    assert "fs_read.yaml: fs.allowed_paths[0]: must be relative to the session's fs_root" in text
    assert "fs_read.yaml: fs.allowed_paths[1]: must not contain '..'" in text


def test_fs_operations_need_their_side_effects():
    document = read_manifest("fs_write.yaml")
    document["declared_side_effects"] = ["fs_read"]
    assert "declared_side_effects: must include fs_write (operation create)" in problems_of(document)


def test_every_problem_of_a_manifest_is_reported_at_once():
    document = http_manifest(risk_level="extreme", colour="red")
    with pytest.raises(ManifestError) as raised:
        parse_manifest(document, source="probe.yaml")
    problems = raised.value.problems
    assert ("probe.yaml", "colour", "is not a manifest field") in problems
    assert any(name == "risk_level" for _, name, _ in problems)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "action_id: a\naction_id: b\n",
            "probe.yaml: is not valid YAML at line 2, column 1: duplicate key 'action_id'",
        ),
        ("- just\n- a list\n", "probe.yaml: must be a YAML mapping (one manifest per file)"),
        ("action_id: [unclosed\n", "probe.yaml: is not valid YAML at line 2"),
    ],
)
def test_a_file_that_is_not_one_yaml_mapping_is_refused(tmp_path, text, message):
    path = tmp_path / "probe.yaml"
    path.write_text(text)
    with pytest.raises(ManifestError) as raised:
        read_manifest_file(path, "probe.yaml")
    assert message in str(raised.value)


def test_two_files_declaring_one_action_are_refused_naming_both(actions):
    write_manifest(actions, "zz_copy.yaml", read_manifest("http_fetch.yaml"))
    with pytest.raises(ManifestError) as raised:
        read_catalogue(actions)
    assert "zz_copy.yaml: action_id: 'http_fetch' is also declared in http_fetch.yaml" in str(raised.value)


def test_problems_of_every_file_are_listed_together(actions):
    write_manifest(actions, "a_bad.yaml", http_manifest("a_bad", risk_level="extreme"))
    write_manifest(actions, "b_bad.yaml", http_manifest("b_bad", colour="red"))
    with pytest.raises(ManifestError) as raised:
        read_catalogue(actions)
    text = str(raised.value)
    assert "a_bad.yaml: risk_level" in text and "b_bad.yaml: colour" in text


# --- module digests ------------------------------------------------------------------------------


def test_a_module_whose_bytes_changed_is_a_digest_mismatch(actions):
    module = actions / "modules" / "echo.wasm"
    module.write_bytes(module.read_bytes() + b"\x00\x04\x01x")  # a custom section: still valid wasm
    reload()
    echo = registry().get("echo_wasm")
    assert echo.trust == Trust.DIGEST_MISMATCH
    assert not echo.digest_ok
    assert echo.module_bytes is None


def test_a_module_swapped_on_disk_after_load_is_caught_by_the_next_process(actions):
    registry()
    assert registry().get("echo_wasm").digest_ok
    module = actions / "modules" / "echo.wasm"
    module.write_bytes(module.read_bytes() + b"\x00\x04\x01x")
    from controlplane.gate import registry as registry_module

    registry_module.forget()  # a process that starts now builds its registry from the database
    assert registry().get("echo_wasm").trust == Trust.DIGEST_MISMATCH


def test_a_missing_module_is_untrusted(actions):
    (actions / "modules" / "echo.wasm").unlink()
    reload()
    assert registry().get("echo_wasm").trust == Trust.MODULE_MISSING


def test_a_module_found_by_digest_needs_no_path(actions):
    document = read_manifest("echo_wasm.yaml")
    document.pop("module")
    write_manifest(actions, "echo_wasm.yaml", document)
    reload()
    assert registry().get("echo_wasm").trust == Trust.DIGEST_OK


def _module_manifest(actions, wat: str, imports: list[str]) -> None:
    data = wasmtime.wat2wasm(wat)
    (actions / "modules" / "probe.wasm").write_bytes(data)
    document = read_manifest("echo_wasm.yaml")
    document.update(
        action_id="probe_wasm",
        module="modules/probe.wasm",
        provider_module_digest="sha256:" + hashlib.sha256(data).hexdigest(),
        required_imports=imports,
    )
    write_manifest(actions, "probe_wasm.yaml", document)


EXPORTS = '(memory (export "memory") 1) (func (export "alloc") (param i32) (result i32) i32.const 0)'
RUN = '(func (export "run") (param i32 i32) (result i64) i64.const 0)'


def test_a_module_importing_what_its_manifest_does_not_declare_is_refused(actions):
    _module_manifest(
        actions, f'(module (import "mandate" "http" (func (param i32 i32) (result i64))) {EXPORTS} {RUN})', []
    )
    with pytest.raises(ManifestError) as raised:
        reload()
    assert "probe_wasm.yaml: module: the module imports mandate:http, which required_imports does not declare" in str(
        raised.value
    )


def test_a_module_importing_outside_mandate_is_refused(actions):
    _module_manifest(actions, f'(module (import "wasi" "fd_write" (func)) {EXPORTS} {RUN})', ["mandate:log"])
    with pytest.raises(ManifestError) as raised:
        reload()
    assert "imports wasi.fd_write: modules may import only from 'mandate'" in str(raised.value)


def test_a_module_without_the_conventions_exports_is_refused(actions):
    _module_manifest(actions, f"(module {EXPORTS})", ["mandate:log"])
    with pytest.raises(ManifestError) as raised:
        reload()
    assert "the module does not export run" in str(raised.value)


# --- reload ------------------------------------------------------------------------------------------


def test_a_bad_manifest_leaves_the_previous_catalogue_active(actions):
    before = registry()
    rows_before = list(ActionManifest.objects.values_list("id", "active"))
    version_before = PolicyState.objects.get().catalogue_version
    document = read_manifest("http_fetch.yaml")
    document["version"] = "2.0.0"
    write_manifest(actions, "http_fetch.yaml", document)  # a good change...
    write_manifest(actions, "broken.yaml", http_manifest("broken", risk_level="extreme"))  # ...and a bad file
    with pytest.raises(ManifestError):
        reload()
    assert registry() is before
    assert registry().get("http_fetch").version == "1.0.0"
    assert list(ActionManifest.objects.values_list("id", "active")) == rows_before
    assert PolicyState.objects.get().catalogue_version == version_before
    failure = ControlPlaneAuditRecord.objects.get(resource_kind="gate_catalogue", action="reload_failed")
    assert "broken.yaml: risk_level" in failure.details["problem"]
    assert AuditEvent.objects.filter(chain_id=audit.CHAIN, event_type="GATE_RELOAD_FAILED").count() == 1


def test_a_bad_policy_leaves_the_previous_catalogue_active(actions, tmp_path):
    before = registry()
    bad = tmp_path / "bad.rego"
    bad.write_text("package mandate.gate\nimport rego.v1\ndecision := {\n")
    write_manifest(actions, "extra.yaml", http_manifest("extra"))
    with override_settings(MANDATE_GATE_POLICY_FILE=bad), pytest.raises(PolicyError):
        reload()
    assert registry() is before and "extra" not in registry()


def test_a_reload_swaps_changed_manifests_and_keeps_one_active_version_each(actions):
    registry()
    document = read_manifest("http_fetch.yaml")
    document["version"] = "1.1.0"
    write_manifest(actions, "http_fetch.yaml", document)
    (actions / "http_post.yaml").unlink()
    write_manifest(actions, "probe_get.yaml", http_manifest())
    version = PolicyState.objects.get().catalogue_version
    result = reload()
    assert result.changed == ("http_fetch", "http_post", "probe_get")
    assert result.manifests_loaded == len(SHIPPED_ACTIONS)  # one removed, one added
    assert result.catalogue_version == version + 1
    catalogue = registry()
    assert catalogue.get("http_fetch").version == "1.1.0"
    assert "http_post" not in catalogue and "probe_get" in catalogue
    assert list(ActionManifest.objects.filter(action_id="http_fetch").values_list("version", "active")) == [
        ("1.1.0", True),
        ("1.0.0", False),
    ]
    assert not ActionManifest.objects.filter(action_id="http_post", active=True).exists()
    assert ActionManifest.objects.get(action_id="probe_get").source == "file:probe_get.yaml"


def test_a_reload_without_changes_writes_no_new_version(actions):
    registry()
    assert reload().changed == ()
    assert ActionManifest.objects.count() == len(SHIPPED_ACTIONS)


def test_another_processs_reload_is_seen_here(actions):
    here = registry()
    # Another process reloads: new rows and a new stamp on the state row.
    document = read_manifest("http_fetch.yaml")
    document["description"] = "Changed elsewhere"
    ActionManifest.objects.filter(action_id="http_fetch").update(document=document)
    with override_settings(MANDATE_GATE_CONFIG_RECHECK_SECONDS=60):
        state.forget_observation()
        assert registry() is here  # not yet: unchanged stamp
        state.bump(state.locked_state(), "catalogue")
        state.forget_observation()  # the recheck interval elapsed
        assert registry().get("http_fetch").description == "Changed elsewhere"


def test_an_empty_database_loads_the_files_once(actions):
    registry()
    registry()
    assert ControlPlaneAuditRecord.objects.filter(resource_kind="gate_catalogue", action="reload").count() == 1
    assert ControlPlaneAuditRecord.objects.get(action="reload").actor == "system"


def test_when_the_first_load_fails_no_action_is_available_until_a_reload(actions):
    write_manifest(actions, "broken.yaml", http_manifest("broken", risk_level="extreme"))
    assert len(registry()) == 0
    assert ControlPlaneAuditRecord.objects.filter(action="reload_failed").count() == 1
    (actions / "broken.yaml").unlink()
    reload()
    assert len(registry()) == len(SHIPPED_ACTIONS)


def test_the_actions_directory_is_the_setting():
    assert actions_dir() == SHIPPED


# --- discovery endpoints -------------------------------------------------------------------------------


def test_the_action_list_is_wrapped_in_actions_with_summaries_only(api_client):
    response = api_client.get("/v1/actions")
    assert response.status_code == 200
    body = response.json()
    assert list(body) == ["actions"]
    assert [entry["action_id"] for entry in body["actions"]] == SHIPPED_ACTIONS
    fetch = next(entry for entry in body["actions"] if entry["action_id"] == "http_fetch")
    assert fetch == {
        "action_id": "http_fetch",
        "version": "1.0.0",
        "risk_level": "low",
        "description": "Fetch a URL with HTTP GET and return its status and body.",
        "database_mode": None,
    }


def test_discovery_ignores_credentials_the_sdks_send_anyway(api_client):
    headers = {"HTTP_AUTHORIZATION": "DPoP not-a-lease", "HTTP_DPOP": "not-a-proof"}
    assert api_client.get("/v1/actions", **headers).status_code == 200
    assert api_client.get("/v1/actions/http_fetch", **headers).status_code == 200
    assert (
        api_client.get("/v1/actions/http_fetch/schema/request", HTTP_AUTHORIZATION="Bearer mdt_bogus").status_code
        == 200
    )


def test_action_detail_is_the_full_manifest_with_latchgates_egress_shape(api_client):
    body = api_client.get("/v1/actions/http_fetch").json()
    assert body["egress"] == {
        "profile": "proxy_allowlist",
        "proxy_allowlist": {"allowed_domains": ["*.wikipedia.org", "api.github.com", "httpbin.org"]},
        "allowed_methods": ["GET"],
    }
    assert body["provider_module_digest"] == "builtin:http_api"
    assert body["resource_limits"] == {
        "fuel": 5000000,
        "memory_mb": 128,
        "timeout_seconds": 30,
        "max_io_calls": 10,
        "max_host_response_bytes": 1048576,
    }
    assert body["io"]["request_schema"]["required"] == ["url"]
    assert body["declared_side_effects"] == ["http_read"]
    assert body["required_scopes"] == ["tools:call"]
    assert body["database_mode"] is None
    assert "module" not in body and "source" not in body
    assert set(body) == {
        "action_id", "version", "description", "provider_module_digest", "required_imports", "resource_limits",
        "io", "egress", "secrets", "risk_level", "declared_side_effects", "required_scopes", "verifier_kind",
        "verification_config", "template", "fs", "database_mode",
    }  # fmt: skip


def test_action_detail_names_secrets_never_values_and_no_egress_is_profile_none(api_client):
    delete = api_client.get("/v1/actions/http_delete").json()
    assert delete["secrets"] == [{"name": "API_TOKEN", "required": False}]
    assert api_client.get("/v1/actions/fs_read").json()["egress"] == {"profile": "none"}


def test_the_request_schema_endpoint_returns_the_schema(api_client):
    response = api_client.get("/v1/actions/echo_wasm/schema/request")
    assert response.status_code == 200
    assert response.json() == registry().get("echo_wasm").io.request_schema


def test_an_unknown_action_is_404_action_not_found(api_client):
    for path in ("/v1/actions/nope", "/v1/actions/nope/schema/request"):
        response = api_client.get(path)
        assert (response.status_code, response.json()) == (404, {"error": "action_not_found"})


def test_an_action_without_a_request_schema_has_no_schema_to_give(api_client, actions):
    document = read_manifest("echo_wasm.yaml")
    document["io"].pop("request_schema")
    write_manifest(actions, "echo_wasm.yaml", document)
    reload()
    response = api_client.get("/v1/actions/echo_wasm/schema/request")
    assert (response.status_code, response.json()) == (404, {"error": "schema_not_found"})


def test_a_registry_entry_can_be_marked_untrusted_without_changing_the_catalogue():
    echo = registry().get("echo_wasm")
    assert not replace(echo, trust=Trust.DIGEST_MISMATCH).digest_ok
    assert registry().get("echo_wasm").digest_ok


# --- the commands -------------------------------------------------------------------------------------


def test_the_reload_command_reloads_and_check_changes_nothing(actions):
    from io import StringIO

    from django.core.management import call_command
    from django.core.management.base import CommandError

    out = StringIO()
    call_command("gate_reload", "--check", stdout=out)
    assert out.getvalue().startswith("ok: 7 manifests")
    assert not ActionManifest.objects.exists()
    call_command("gate_reload", stdout=out)
    assert ActionManifest.objects.filter(active=True).count() == len(SHIPPED_ACTIONS)
    assert ControlPlaneAuditRecord.objects.get(action="reload").actor == "cli"
    write_manifest(actions, "broken.yaml", http_manifest("broken", risk_level="extreme"))
    err = StringIO()
    with pytest.raises(CommandError, match="nothing was changed"):
        call_command("gate_reload", "--check", stderr=err)
    assert "broken.yaml: risk_level: 'extreme' is not one of" in err.getvalue()


def test_the_learn_command_records_cli_as_the_source():
    from io import StringIO

    from django.core.management import call_command
    from django.core.management.base import CommandError

    from controlplane.models import LearnedDomain, LearnedPath

    call_command("gate_learn", "domain", "http_fetch", "api.example.com", "--by", "ops-bot", stdout=StringIO())
    row = LearnedDomain.objects.get()
    assert (row.source, row.added_by) == ("cli", "ops-bot")
    call_command("gate_learn", "path", "fs_read", "reports/**", stdout=StringIO())
    assert LearnedPath.objects.get().source == "cli"
    with pytest.raises(CommandError, match="invalid_domain"):
        call_command("gate_learn", "domain", "http_fetch", "127.0.0.1", stdout=StringIO())
    out = StringIO()
    call_command("gate_learn", "domain", "http_fetch", "api.example.com", "--forget", stdout=out)
    assert out.getvalue().startswith("removed") and not LearnedDomain.objects.exists()
