"""The gate's policy: each rule of policy.rego decided through ``decide_policy`` (table-
driven, in the Rego's order), sinks derived from the granted actions, the allowlist, the
version moving with every change, remembered decisions equal to the engine's, and the
learned targets' validation and matching."""

from dataclasses import replace

import pytest
from django.test import override_settings

from controlplane.gate import acl, audit, learned, state
from controlplane.gate.manifests import Trust
from controlplane.gate.policy import PolicyInput, _snapshot, decide_policy, sanitized_reason
from controlplane.gate.registry import registry, reload
from controlplane.gate.rego import CompiledPolicy, PolicyError, read_policy_source
from controlplane.gate.targets import (
    TargetError,
    domain_matches,
    glob_matches,
    is_sensitive_path,
    normalize_path,
    validate_glob,
    validate_learned_domain,
    validate_manifest_domain,
)
from controlplane.models import PolicyPrincipal, PolicyState
from governance.errors import GateError
from tests.gate_actions import copy_actions, read_manifest, write_manifest

pytestmark = pytest.mark.django_db

OPERATOR = audit.Actor.named("alice")
CALL = ("tools:call",)


@pytest.fixture
def policy():
    """agent-1 may call http_fetch, fs_read, http_delete and fs_write; the wildcard principal
    may call http_fetch; agent-allow is allowlisted for http_delete."""
    acl.grant("agent-1", ["http_fetch", "fs_read", "http_delete", "fs_write", "echo_wasm"], actor=OPERATOR)
    acl.grant("*", ["http_fetch"], actor=OPERATOR)
    acl.grant("agent-allow", ["http_delete"], actor=OPERATOR)
    acl.add_to_allowlist("http_delete", "agent-allow", actor=OPERATOR)


def decide(principal="agent-1", action_id="http_fetch", scopes=CALL, **facts):
    return decide_policy(PolicyInput(principal, action_id, scopes, **facts))


def untrusted(action_id):
    return replace(registry().get(action_id), trust=Trust.DIGEST_MISMATCH)


def needs_scope(action_id, scope):
    manifest = registry().get(action_id)
    return replace(manifest, required_scopes=(*manifest.required_scopes, scope))


# (case, input, result, reason: deny_reason or hold_reason)
RULES = [
    (
        "untrusted action",
        lambda: dict(manifest=untrusted("http_fetch")),
        "deny",
        "untrusted action: provider module digest verification failed",
    ),
    (
        "not in the ACL",
        lambda: dict(action_id="http_post"),
        "deny",
        "principal 'agent-1' is not authorised for action 'http_post'",
    ),
    (
        "no tools:call scope",
        lambda: dict(scopes=("files:read",)),
        "deny",
        "scope 'tools:call' is required but absent from the lease scopes (files:read)",
    ),
    (
        "no scopes at all",
        lambda: dict(scopes=()),
        "deny",
        "scope 'tools:call' is required but absent from the lease scopes (none)",
    ),
    (
        "missing a required scope",
        lambda: dict(manifest=needs_scope("http_fetch", "web:read")),
        "deny",
        "lease is missing required scope(s) for action 'http_fetch': web:read",
    ),
    ("budget exhausted", lambda: dict(calls_remaining=0), "deny", "budget exhausted: no calls remaining"),
    ("denied path", lambda: dict(action_id="fs_read", denied_paths=(".env",)), "deny", "path(s) denied"),
    ("high risk", lambda: dict(action_id="http_delete"), "hold", "risk_level_high"),
    (
        "critical risk",
        lambda: dict(manifest=replace(registry().get("http_fetch"), risk_level="critical")),
        "hold",
        "risk_level_high",
    ),
    ("sensitive path", lambda: dict(action_id="fs_read", sensitive_path=True), "hold", "sensitive_path"),
    (
        "unresolved path",
        lambda: dict(action_id="fs_read", unresolved_paths=("reports/q1.csv",)),
        "hold",
        "unresolved_path",
    ),
    (
        "unresolved domain",
        lambda: dict(unresolved_domains=("api.example.com",)),
        "hold",
        "unresolved_domain",
    ),
    ("allowlisted pair skips the hold", lambda: dict(principal="agent-allow", action_id="http_delete"), "allow", None),
    ("budget left", lambda: dict(calls_remaining=1), "allow", None),
    ("no budget on the lease", lambda: dict(calls_remaining=None), "allow", None),
    ("wildcard principal", lambda: dict(principal="agent-unknown"), "allow", None),
    (
        "wildcard does not grant more",
        lambda: dict(principal="agent-unknown", action_id="fs_read"),
        "deny",
        "not authorised",
    ),
    ("plain allow", lambda: dict(), "allow", None),
]


@pytest.mark.parametrize(("case", "facts", "result", "reason"), RULES, ids=[rule[0] for rule in RULES])
def test_each_rule_decides(policy, case, facts, result, reason):
    decision = decide(**facts())
    assert decision.result == result
    if result == "deny":
        assert reason in decision.deny_reason
        assert decision.hold_reason is None
    elif result == "hold":
        assert decision.hold_reason == reason
        assert decision.deny_reason is None
    else:
        assert decision.deny_reason is None
    assert decision.policy_version == PolicyState.objects.get().policy_version


@pytest.mark.parametrize(
    ("case", "facts", "reason"),
    [
        ("untrusted before the ACL", dict(action_id="http_post"), "untrusted"),
        ("ACL before scopes", dict(action_id="http_post", scopes=()), "not authorised"),
        ("scope before budget", dict(scopes=(), calls_remaining=0), "tools:call"),
        (
            "budget before the allowlist",
            dict(principal="agent-allow", action_id="http_delete", calls_remaining=0),
            "budget",
        ),
    ],
)
def test_rules_apply_in_order(policy, case, facts, reason):
    if case.startswith("untrusted"):
        facts["manifest"] = untrusted("http_post")
    decision = decide(**facts)
    assert decision.result == "deny" and reason in decision.deny_reason


def test_the_allowlist_never_lifts_a_deny(policy):
    acl.add_to_allowlist("http_post", "agent-allow", actor=OPERATOR)
    decision = decide(principal="agent-allow", action_id="http_post")
    assert decision.result == "deny" and "not authorised" in decision.deny_reason
    assert decide(principal="agent-allow", action_id="http_delete").allowlisted


def test_a_sink_the_principal_may_not_cause_is_denied(policy):
    # Sinks are derived, never set: only a stale derivation (a manifest that now declares
    # more than when it was granted) can leave a granted action with a sink not allowed.
    PolicyPrincipal.objects.filter(name="agent-1").update(sinks=["http_read"])
    state.bump(state.locked_state(), "policy")
    decision = decide(action_id="fs_read")
    assert decision.result == "deny"
    assert decision.deny_reason == "disallowed sink(s) for principal 'agent-1': fs_read"


def test_an_explicit_inheritance_adds_the_wildcards_actions_and_sinks(policy):
    acl.grant("agent-2", ["fs_read"], actor=OPERATOR)
    assert decide(principal="agent-2").result == "deny"  # has an entry: no wildcard fallback
    acl.grant("agent-2", ["fs_read"], actor=OPERATOR, inherits_wildcard=True)
    decision = decide(principal="agent-2")
    assert decision.result == "allow"
    assert decision.sinks == ("fs_read", "http_read")


def test_deny_reasons_are_sanitized():
    acl.grant("*", ["http_fetch"], actor=OPERATOR)
    decision = decide(principal='evil\x1b[31m\n"agent"' + "x" * 1000, action_id="fs_read")
    assert decision.result == "deny"
    assert len(decision.deny_reason) == 500
    assert not any(ord(ch) < 32 or ord(ch) == 127 for ch in decision.deny_reason)
    assert sanitized_reason("a\x00b\x7fc\td") == "abcd"


def test_a_policy_change_applies_to_the_next_decision(policy):
    assert decide(action_id="fs_read").result == "allow"
    acl.revoke("agent-1", ["fs_read"], actor=OPERATOR)
    assert decide(action_id="fs_read").result == "deny"


def test_remembered_decisions_are_the_engines(policy):
    compiled = _snapshot.get().compiled
    assert compiled.remembers
    for _case, facts, _result, _reason in RULES:
        facts = facts()
        manifest = facts.pop("manifest", None)
        policy_input = PolicyInput(
            facts.pop("principal", "agent-1"), facts.pop("action_id", "http_fetch"), facts.pop("scopes", CALL), **facts
        )
        document = policy_input.document(manifest or registry().get(policy_input.action_id))
        assert compiled.evaluate(document) == compiled.query(document)
        assert compiled.evaluate(document) == compiled.query(document)  # the second answer is remembered


def test_an_impure_policy_is_never_remembered():
    source = read_policy_source().replace("import rego.v1", "import rego.v1\n\n_now := time.now_ns()")
    assert not CompiledPolicy(source, {"acl": {}, "allowlist": {}, "policy_version": 0}).remembers


def test_a_policy_that_cannot_be_evaluated_is_503_policy_engine_unavailable(policy, monkeypatch):
    def broken(self, document):
        raise PolicyError("boom")

    monkeypatch.setattr(CompiledPolicy, "evaluate", broken)
    with pytest.raises(GateError) as raised:
        decide()
    assert (raised.value.status, raised.value.code) == (503, "policy_engine_unavailable")


def test_warm_decisions_and_targets_cost_no_query(policy, django_assert_num_queries):
    with override_settings(MANDATE_GATE_CONFIG_RECHECK_SECONDS=60):
        state.forget_observation()
        decide()
        learned.effective_domains("http_fetch")
        learned.effective_paths("fs_read")
        with django_assert_num_queries(0):
            assert decide().allowed
            assert learned.effective_domains("http_fetch").allows("api.github.com")
            assert learned.effective_paths("fs_read").allows("docs/readme.md")


def test_the_rego_input_has_the_documented_shape():
    document = PolicyInput("agent-1", "http_fetch", ("tools:call", "tools:call"), calls_remaining=3).document(
        registry().get("http_fetch")
    )
    assert document == {
        "principal": "agent-1",
        "action": {
            "action_id": "http_fetch",
            "risk_level": "low",
            "side_effects": ["http_read"],
            "required_scopes": ["tools:call"],
            "trusted": True,
        },
        "scopes": ["tools:call"],
        "budget": {"limited": True, "exhausted": False},
        "target": {"sensitive_path": False, "denied_paths": [], "unresolved_paths": [], "unresolved_domains": []},
    }


def test_an_action_missing_from_the_catalogue_is_denied_as_untrusted(policy):
    assert "untrusted" in decide(action_id="gone").deny_reason


# --- grants, sinks, allowlist, versions ------------------------------------------------------------


def version() -> int:
    return PolicyState.objects.get().policy_version


def test_sinks_are_derived_from_the_granted_actions():
    entry = acl.grant("agent-ops", ["http_fetch", "http_post", "fs_write"], actor=OPERATOR)
    assert entry.sinks == ("fs_write", "http_read", "http_write")
    entry = acl.revoke("agent-ops", ["http_post"], actor=OPERATOR)
    assert entry.actions == ("fs_write", "http_fetch")
    assert entry.sinks == ("fs_write", "http_read")
    assert PolicyPrincipal.objects.get(name="agent-ops").sinks == ["fs_write", "http_read"]


def test_revoking_every_action_removes_the_principal():
    acl.grant("agent-ops", ["http_fetch"], actor=OPERATOR)
    entry = acl.revoke("agent-ops", ["http_fetch"], actor=OPERATOR)
    assert entry.actions == () and entry.sinks == ()
    assert not PolicyPrincipal.objects.filter(name="agent-ops").exists()


def test_a_reload_rederives_sinks_when_manifests_change_what_they_declare(tmp_path):
    directory = copy_actions(tmp_path)
    with override_settings(MANDATE_ACTIONS_DIR=directory):
        acl.grant("agent-ops", ["http_fetch"], actor=OPERATOR)
        before = version()
        document = read_manifest("http_fetch.yaml")
        document["declared_side_effects"] = ["http_read", "http_write"]
        write_manifest(directory, "http_fetch.yaml", document)
        result = reload()
        assert PolicyPrincipal.objects.get(name="agent-ops").sinks == ["http_read", "http_write"]
        assert result.policy_version == before + 1


def test_every_change_moves_the_policy_version_and_no_op_does_not():
    registry()
    steps = [
        lambda: acl.grant("agent-ops", ["http_fetch"], actor=OPERATOR),
        lambda: acl.grant("agent-ops", ["http_post"], actor=OPERATOR),
        lambda: acl.grant("agent-ops", ["http_post"], actor=OPERATOR, inherits_wildcard=True),
        lambda: acl.add_to_allowlist("http_fetch", "agent-ops", actor=OPERATOR),
        lambda: acl.remove_from_allowlist("http_fetch", "agent-ops", actor=OPERATOR),
        lambda: acl.revoke("agent-ops", ["http_post"], actor=OPERATOR),
    ]
    for step in steps:
        before = version()
        step()
        assert version() == before + 1
    no_ops = [
        lambda: acl.grant("agent-ops", ["http_fetch"], actor=OPERATOR),
        lambda: acl.revoke("agent-ops", ["http_delete"], actor=OPERATOR),
        lambda: acl.revoke("nobody", ["http_fetch"], actor=OPERATOR),
    ]
    for step in no_ops:
        before = version()
        step()
        assert version() == before


def test_a_grant_names_only_loaded_actions():
    with pytest.raises(GateError) as raised:
        acl.grant("agent-ops", ["http_fetch", "github_read"], actor=OPERATOR)
    assert (raised.value.status, raised.value.code) == (400, "unknown_action")
    assert not PolicyPrincipal.objects.exists()


def test_the_allowlist_names_only_loaded_actions():
    with pytest.raises(GateError) as raised:
        acl.add_to_allowlist("github_read", "agent-ops", actor=OPERATOR)
    assert (raised.value.status, raised.value.code) == (404, "action_not_found")


# --- targets: domains --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("domain", "normalized"),
    [
        ("api.example.com", "api.example.com"),
        ("API.Example.COM.", "api.example.com"),
        ("*.example.com", "*.example.com"),
        ("*.eu.example.co.uk", "*.eu.example.co.uk"),
        ("xn--bcher-kva.example", "xn--bcher-kva.example"),
    ],
)
def test_a_learned_domain_is_normalized(domain, normalized):
    assert validate_learned_domain(domain) == normalized


@pytest.mark.parametrize(
    ("domain", "why"),
    [
        ("10.0.0.1", "is an IP address"),
        ("8.8.8.8", "is an IP address"),
        ("::1", "is an IP address"),
        ("[2001:db8::1]", "is an IP address"),
        ("localhost", "loopback"),
        ("api.localhost", "loopback"),
        ("intranet", "single label"),
        ("*.com", "over-broad"),
        ("*.co.uk", "over-broad"),
        ("*", "only a leading"),
        ("api.*.example.com", "only a leading"),
        ("exa mple.com", "whitespace"),
        ("bad_label.example.com", "only letters, digits and inner hyphens"),
        ("-bad.example.com", "only letters, digits and inner hyphens"),
        ("a..example.com", "empty label"),
        ("x" * 64 + ".example.com", "longer than 63"),
        ("", "must not be empty"),
    ],
)
def test_a_learned_domain_must_be_a_public_host_name(domain, why):
    with pytest.raises(TargetError) as raised:
        validate_learned_domain(domain)
    assert why in str(raised.value)


def test_manifests_may_name_local_targets_operators_chose():
    assert validate_manifest_domain("127.0.0.1") == "127.0.0.1"
    assert validate_manifest_domain("localhost") == "localhost"
    with pytest.raises(TargetError):
        validate_manifest_domain("*.com")


@pytest.mark.parametrize(
    ("entry", "host", "matches"),
    [
        ("api.example.com", "api.example.com", True),
        ("api.example.com", "API.example.com.", True),
        ("api.example.com", "x.api.example.com", False),
        ("*.example.com", "a.example.com", True),
        ("*.example.com", "a.b.example.com", True),
        ("*.example.com", "example.com", False),
        ("*.example.com", "badexample.com", False),
    ],
)
def test_domain_matching(entry, host, matches):
    assert learned.DomainRules((entry,), ()).allows(host) is matches
    assert domain_matches(entry, host.lower().rstrip(".")) is matches


def test_effective_domains_are_the_manifests_and_the_learned_ones():
    learned.learn_domain("http_fetch", "api.example.com", "approval", "alice", approval_id="apr_1")
    rules = learned.effective_domains("http_fetch")
    assert list(rules) == ["*.wikipedia.org", "api.github.com", "httpbin.org", "api.example.com"]
    assert rules.allows("en.wikipedia.org") and rules.allows("api.example.com") and not rules.allows("evil.example")
    assert not learned.effective_domains("http_post").allows("api.example.com")  # per action
    assert list(learned.effective_domains("unknown")) == []


@pytest.mark.parametrize(
    ("call", "status", "code"),
    [
        (lambda: learned.learn_domain("http_fetch", "10.1.2.3", "admin", "alice"), 400, "invalid_domain"),
        (lambda: learned.learn_domain("fs_read", "api.example.com", "admin", "alice"), 400, "invalid_domain"),
        (lambda: learned.learn_domain("nope", "api.example.com", "admin", "alice"), 404, "action_not_found"),
        (lambda: learned.learn_domain("http_fetch", "httpbin.org", "admin", "alice"), 409, "domain_already_exists"),
        (lambda: learned.learn_domain("http_fetch", "api.example.com", "robot", "alice"), 400, "invalid_request"),
        (lambda: learned.learn_path("http_fetch", "docs/**", "admin", "alice"), 400, "invalid_path"),
        (lambda: learned.learn_path("fs_read", "/data/reports", "admin", "alice"), 400, "invalid_path"),
        (lambda: learned.learn_path("fs_read", "**", "admin", "alice"), 400, "invalid_path"),
        (lambda: learned.learn_path("fs_read", "config/.env", "admin", "alice"), 400, "invalid_path"),
        (lambda: learned.learn_path("fs_read", "docs/**", "admin", "alice"), 409, "path_already_exists"),
    ],
)
def test_learning_refuses_what_it_must(call, status, code):
    with pytest.raises(GateError) as raised:
        call()
    assert (raised.value.status, raised.value.code) == (status, code)


def test_learning_twice_is_a_conflict_unless_the_caller_accepts_it():
    first = learned.learn_domain("http_fetch", "api.example.com", "approval", "alice", approval_id="apr_1")
    assert (first.source, first.added_by, first.approval_id) == ("approval", "alice", "apr_1")
    with pytest.raises(GateError):
        learned.learn_domain("http_fetch", "API.example.com", "admin", "bob")
    again = learned.learn_domain("http_fetch", "api.example.com", "approval", "bob", exist_ok=True)
    assert again.pk == first.pk


def test_learned_targets_move_their_own_version_not_the_policys():
    registry()
    before = PolicyState.objects.get()
    learned.learn_domain("http_fetch", "api.example.com", "cli", "alice")
    after = PolicyState.objects.get()
    assert after.targets_version == before.targets_version + 1
    assert after.policy_version == before.policy_version


# --- targets: paths ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "normalized"),
    [("docs/a.md", "docs/a.md"), ("./docs//a.md", "docs/a.md"), (".", "."), ("docs/./a", "docs/a")],
)
def test_paths_are_normalized(path, normalized):
    assert normalize_path(path) == normalized


@pytest.mark.parametrize(
    ("path", "why"),
    [
        ("/etc/passwd", "relative"),
        ("docs/../../etc", "'..'"),
        ("docs\\a", "'/' separators"),
        ("a\x00b", "control characters"),
        ("", "1-1024"),
    ],
)
def test_paths_that_leave_the_root_are_refused(path, why):
    with pytest.raises(TargetError) as raised:
        normalize_path(path)
    assert why in str(raised.value)


def test_learned_globs_may_not_allow_everything():
    for glob in ("**", "*", "**/*"):
        with pytest.raises(TargetError):
            validate_glob(glob, learned=True)
    with pytest.raises(TargetError):
        validate_glob("docs/a**b")
    assert validate_glob("**") == "**"  # a manifest may


@pytest.mark.parametrize(
    ("glob", "path", "matches"),
    [
        ("**/.env", ".env", True),
        ("**/.env", "app/config/.env", True),
        ("**/.env", "app/.envrc", False),
        ("src/**", "src/a/b.py", True),
        ("src/**", "src", False),
        ("*.md", "README.md", True),
        ("*.md", "docs/README.md", False),
        ("docs/**/*.md", "docs/a.md", True),
        ("docs/**/*.md", "docs/x/y/a.md", True),
        ("data/report-?.csv", "data/report-1.csv", True),
        ("data/report-[0-9].csv", "data/report-x.csv", False),
        ("data/report-[!0-9].csv", "data/report-x.csv", True),
    ],
)
def test_glob_matching(glob, path, matches):
    assert glob_matches(glob, path) is matches


@pytest.mark.parametrize(
    ("path", "sensitive"),
    [
        (".env", True),
        ("app/.env.production", True),
        ("deploy/secrets/db.txt", True),
        ("home/.ssh/id_ed25519", True),
        ("home/.aws/credentials", True),
        ("home/.config/gcloud/application_default_credentials.json", True),
        ("ops/.kube/config", True),
        ("keys/service-credentials.json", True),
        ("/etc/shadow", True),  # cannot be placed under the root
        ("src/main.py", False),
        ("docs/secrets.md", False),
    ],
)
def test_sensitive_paths(path, sensitive):
    assert is_sensitive_path(path) is sensitive


def test_denied_paths_win_over_learned_ones():
    learned.learn_path("fs_read", "config/**", "admin", "alice")
    rules = learned.effective_paths("fs_read")
    assert rules.classify("config/app.toml") == "allowed"
    assert rules.classify("config/.env") == "denied"
    assert rules.classify("config/secrets/key") == "denied"
    assert rules.classify("reports/q1.csv") == "unresolved"
    assert rules.classify("../outside") == "denied"
    assert learned.effective_paths("http_fetch").classify("docs/a.md") == "unresolved"  # no fs section


def test_threads_evaluate_the_same_snapshot_each_with_its_own_interpreter():
    from concurrent.futures import ThreadPoolExecutor

    data = {
        "acl": {
            f"agent-{n}": {"actions": ["http_fetch"], "sinks": ["http_read"], "inherits_wildcard": False}
            for n in range(8)
        },
        "allowlist": {},
        "policy_version": 1,
    }
    compiled = CompiledPolicy(read_policy_source(), data)
    action = {
        "action_id": "http_fetch",
        "risk_level": "low",
        "side_effects": ["http_read"],
        "required_scopes": [],
        "trusted": True,
    }

    def decide_many(n):
        results = []
        for i in range(200):
            principal = f"agent-{(n + i) % 16}"  # agents 8-15 have no entry and no wildcard: denied
            document = {
                "principal": principal,
                "action": action,
                "scopes": ["tools:call"],
                "budget": {"limited": False, "exhausted": False},
                "target": {
                    "sensitive_path": False,
                    "denied_paths": [],
                    "unresolved_paths": [],
                    "unresolved_domains": [],
                },
            }
            expected = "allow" if (n + i) % 16 < 8 else "deny"
            results.append(compiled.query(document)["result"] == expected)
        return all(results)

    with ThreadPoolExecutor(max_workers=8) as pool:
        assert all(pool.map(decide_many, range(8)))
