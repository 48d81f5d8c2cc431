"""A quick yes for the common request schema: ``quick_check(schema)`` compiles a JSON Schema
that uses only ``type`` (object, string), ``properties``, ``required``, ``additionalProperties``
(true/false), ``minLength``, ``maxLength``, ``pattern`` and string ``enum`` (and keywords
jsonschema does not assert: ``description``, ``default``, ``format`` without a format
checker, ...) into a plain predicate, or gives None for any other schema.

The predicate applies each keyword exactly as jsonschema's Draft 2020-12 validator does
(``jsonschema/_keywords.py``: ``len`` for lengths, ``re.search`` for patterns, ``isinstance``
for types), so True means jsonschema finds no error. It only ever says yes quickly: on False
the manifest asks jsonschema, which decides and words the error (``Manifest.request_problem``).
A shipped action's body checked by jsonschema costs ~12 µs; by its predicate, ~1 µs.
"""

import re
from collections.abc import Callable

DIALECT = "https://json-schema.org/draft/2020-12/schema"
# Keywords jsonschema's Draft 2020-12 validator asserts that the predicate does not: any of
# them (or a ``$`` keyword: references, anchors, dialects) and the schema is not compiled.
_ASSERTED_ELSEWHERE = frozenset(
    {
        "allOf",
        "anyOf",
        "const",
        "contains",
        "dependentRequired",
        "dependentSchemas",
        "exclusiveMaximum",
        "exclusiveMinimum",
        "if",
        "items",
        "maxItems",
        "maxProperties",
        "maximum",
        "minItems",
        "minProperties",
        "minimum",
        "multipleOf",
        "not",
        "oneOf",
        "patternProperties",
        "prefixItems",
        "propertyNames",
        "unevaluatedItems",
        "unevaluatedProperties",
        "uniqueItems",
    }
)
_TYPES = {"object": dict, "string": str}

Check = Callable[[object], bool]


def quick_check(schema, *, asserts_formats: bool = False) -> Check | None:
    """The predicate of ``schema``, or None when it uses anything but the subset above (or
    when formats are asserted: the predicate does not check them)."""
    if asserts_formats or not isinstance(schema, dict) or schema.get("$schema", DIALECT) != DIALECT:
        return None
    return _compile({key: value for key, value in schema.items() if key != "$schema"})


def _compile(schema) -> Check | None:
    if not isinstance(schema, dict) or any(
        not isinstance(key, str) or key.startswith("$") or key in _ASSERTED_ELSEWHERE for key in schema
    ):
        return None
    checks: list[Check] = []
    if "type" in schema:
        kind = _TYPES.get(schema["type"]) if isinstance(schema["type"], str) else None
        if kind is None:
            return None
        checks.append(lambda value, kind=kind: isinstance(value, kind))
    if "enum" in schema:
        values = schema["enum"]
        if not isinstance(values, list) or not all(isinstance(each, str) for each in values):
            return None
        allowed = frozenset(values)
        checks.append(lambda value: isinstance(value, str) and value in allowed)
    string_checks = _string_checks(schema)
    if string_checks is None:
        return None
    checks.extend(string_checks)
    object_checks = _object_checks(schema)
    if object_checks is None:
        return None
    checks.extend(object_checks)
    return lambda value: all(check(value) for check in checks)


def _string_checks(schema) -> list[Check] | None:
    checks: list[Check] = []
    for keyword in ("minLength", "maxLength"):
        if keyword in schema:
            bound = schema[keyword]
            if type(bound) is not int:
                return None
            if keyword == "minLength":
                checks.append(lambda value, bound=bound: not isinstance(value, str) or not len(value) < bound)
            else:
                checks.append(lambda value, bound=bound: not isinstance(value, str) or not len(value) > bound)
    if "pattern" in schema:
        if not isinstance(schema["pattern"], str):
            return None
        try:
            search = re.compile(schema["pattern"]).search
        except re.error:
            return None
        checks.append(lambda value: not isinstance(value, str) or search(value) is not None)
    return checks


def _object_checks(schema) -> list[Check] | None:
    properties = schema.get("properties", {})
    required = schema.get("required", [])
    additional = schema.get("additionalProperties", True)
    if (
        not isinstance(properties, dict)
        or not isinstance(required, list)
        or not all(isinstance(name, str) for name in required)
        or type(additional) is not bool
    ):
        return None
    compiled = {}
    for name, subschema in properties.items():
        check = _compile(subschema)
        if check is None:
            return None
        compiled[name] = check
    known = frozenset(properties)

    def check_object(value) -> bool:
        if not isinstance(value, dict):
            return True  # these keywords apply to objects only
        if not additional and not known.issuperset(value):
            return False
        if not all(name in value for name in required):
            return False
        return all(check(value[name]) for name, check in compiled.items() if name in value)

    return [check_object] if properties or required or not additional else []
