"""The request schema's quick predicate (``controlplane/gate/quick_schema.py``) agrees with
jsonschema on every body, for every shipped action and for each keyword it compiles; any
other schema is left to jsonschema alone; and a body it does not pass is still worded by
jsonschema."""

import random

import jsonschema
import pytest

from controlplane.gate.manifests import parse_manifest
from controlplane.gate.quick_schema import quick_check
from tests.gate_actions import SHIPPED, http_manifest, read_manifest

SHIPPED_NAMES = sorted(path.name for path in SHIPPED.glob("*.yaml"))

KEYWORD_SCHEMAS = [
    {"type": "object", "required": ["a"], "properties": {"a": {"type": "string"}}},
    {"type": "object", "additionalProperties": False, "properties": {"a": {}, "b": {"type": "string"}}},
    {"type": "object", "properties": {"a": {"type": "string", "minLength": 2, "maxLength": 4}}},
    {"type": "object", "properties": {"a": {"minLength": 1}, "b": {"maxLength": 0}}},  # no type: strings only
    {"type": "object", "properties": {"a": {"pattern": "^x[0-9]+$"}, "b": {"pattern": "é"}}},
    {"type": "object", "properties": {"a": {"enum": ["read", "write", ""]}}},
    {"type": "object", "properties": {"a": {"type": "object", "required": ["b"], "additionalProperties": False}}},
    {"properties": {"a": {"type": "string", "format": "uri", "description": "d", "default": "x"}}},
    {"$schema": "https://json-schema.org/draft/2020-12/schema", "type": "object"},
    {},
]

VALUES = [
    None,
    True,
    False,
    0,
    1,
    1.0,
    -2.5,
    "",
    "x",
    "x12",
    "read",
    "write",
    "list",
    "overwrite",
    "sha256:" + "ab" * 32,
    "abcd",
    "abcde",
    "é",
    "\ud800",
    "x\n",
    [],
    ["a"],
    {},
    {"b": "1"},
    {"c": 1},
]
NAMES = ["a", "b", "c", "url", "body", "operation", "path", "content_base64", "message", "headers"]


def bodies(schema: dict, seed: int, count: int):
    """Objects of the names the schema uses (its required ones in half of them, so that many
    pass), each holding one of VALUES or a nested object."""
    rng = random.Random(seed)
    names = sorted(set(NAMES) | set(schema.get("properties", {})))
    required = schema.get("required", [])
    for _ in range(count):
        chosen = set(rng.sample(names, rng.randint(0, 4)))
        if rng.random() < 0.5:
            chosen.update(required)
        yield {name: rng.choice(VALUES) if rng.random() < 0.9 else {"b": rng.choice(VALUES)} for name in sorted(chosen)}


def agrees(schema, seed, refuses=True):
    quick = quick_check(schema)
    assert quick is not None, schema
    validator = jsonschema.Draft202012Validator(schema)
    outcomes = set()
    for body in bodies(schema, seed, 5000):
        outcome = validator.is_valid(body)
        assert quick(body) == outcome, (schema, body)
        outcomes.add(outcome)
    assert outcomes == ({True, False} if refuses else {True})  # both kinds of body were tried


@pytest.mark.parametrize("name", SHIPPED_NAMES)
def test_every_shipped_request_schema_has_a_predicate_that_agrees_with_jsonschema(name):
    schema = read_manifest(name)["io"]["request_schema"]
    agrees(schema, seed=len(name))
    valid = parse_manifest(read_manifest(name), source=name)
    assert valid.request_quick_check is not None


@pytest.mark.parametrize("schema", KEYWORD_SCHEMAS)
def test_each_compiled_keyword_agrees_with_jsonschema(schema):
    agrees(schema, seed=7, refuses=schema.get("properties") is not None)


@pytest.mark.parametrize(
    "schema",
    [
        {"type": "integer"},
        {"type": ["string", "null"]},
        {"properties": {"a": {"type": "number"}}},
        {"properties": {"a": {"minimum": 1}}},
        {"properties": {"a": {"$ref": "#/$defs/x"}}, "$defs": {"x": {}}},
        {"anyOf": [{"type": "string"}]},
        {"patternProperties": {"^a": {}}},
        {"additionalProperties": {"type": "string"}},
        {"properties": {"a": True}},
        {"properties": {"a": {"enum": ["x", 1]}}},
        {"properties": {"a": {"minLength": 1.5}}},
        {"properties": {"a": {"pattern": "("}}},
        {"$schema": "http://json-schema.org/draft-07/schema#"},
        {1: "a key that is not a string"},
        True,
    ],
)
def test_any_other_schema_is_left_to_jsonschema(schema):
    assert quick_check(schema) is None


def test_a_schema_whose_formats_are_asserted_is_left_to_jsonschema():
    assert quick_check({"properties": {"a": {"format": "uri"}}}, asserts_formats=True) is None


def test_a_body_the_predicate_does_not_pass_is_worded_by_jsonschema():
    manifest = parse_manifest(http_manifest(), source="probe.yaml")
    assert manifest.request_quick_check is not None
    assert manifest.request_problem({"url": "https://api.example/x"}) is None
    assert manifest.request_problem({"url": 5}) == "url: 5 is not of type 'string'"
    assert manifest.request_problem({}) == "'url' is a required property"
    assert manifest.request_problem({"url": ["x"]}) == "url: ['x'] is not of type 'string'"
