"""The one parser of an evaluate request (MIDAS ``POST /v1/evaluate``), for the DRF view and
the hot path alike.

It takes what ``EvaluateRequestSerializer`` (which documents the request in OpenAPI)
describes and refuses the rest with DRF's own words: ``field: message`` lines in the
fields' order, joined by ``; `` (tests/test_evaluate_fastpath.py checks both on a corpus).
Strings are trimmed and numbers may stand for strings, as DRF's CharField does. It is
plain code rather than a serializer because it runs on every evaluation.
"""

import math
import re

from envelopes.evaluation.engine import EvaluationRequest
from envelopes.services.queries import FORBIDDEN_IN_REQUEST_ID
from governance.errors import Invalid
from governance.ijson import SAFE_INTEGER

MAX_TEXT = 255
RISK_RATINGS = ("low", "medium", "high", "critical")
CONSEQUENCE_TYPES = ("monetary", "risk_rating")
_CURRENCY = re.compile(r"^[A-Z]{3}$")
_NOT_A_CURRENCY = "This value does not match the required pattern."
_SURROGATE = re.compile("[\ud800-\udfff]")
_ABSENT = object()


class _Refused(Exception):
    """A value's problems: ``(path below the field, message)`` pairs."""

    def __init__(self, *messages: str, lines: list | None = None):
        super().__init__()
        self.lines = lines if lines is not None else [("", message) for message in messages]


def _text(value, *, blank: bool = False, limit: int | None = MAX_TEXT, currency: bool = False, id_like=False) -> str:
    """DRF's CharField (and RegexField for a currency): trimmed, numbers taken as text."""
    if type(value) is str:
        text = value.strip()
        if not text:
            if blank:
                return ""
            raise _Refused("This field may not be blank.")
    elif value is None:
        raise _Refused("This field may not be null.")
    elif type(value) is int or type(value) is float:
        text = str(value)
    else:
        raise _Refused(_NOT_A_CURRENCY if currency else "Not a valid string.")  # RegexField's "invalid"
    problems = []
    if limit is not None and len(text) > limit:
        problems.append(f"Ensure this field has no more than {limit} characters.")
    if "\x00" in text:
        problems.append("Null characters are not allowed.")
    if not text.isascii() and (surrogate := _SURROGATE.search(text)):
        problems.append(f"Surrogate characters are not allowed: U+{ord(surrogate.group()):X}.")
    if currency and not _CURRENCY.search(text):
        problems.append(_NOT_A_CURRENCY)
    if problems:
        raise _Refused(*problems)
    if id_like and FORBIDDEN_IN_REQUEST_ID.search(text):
        raise _Refused("must not contain '/', '\\' or control characters")
    return text


def _number(value, low: float, high: float | None = None) -> float:
    """A JSON number (StrictNumberField): strings and booleans refused."""
    if value is None:
        raise _Refused("This field may not be null.")
    if type(value) is not float and type(value) is not int:
        raise _Refused("A valid number is required.")
    try:
        number = float(value)
    except OverflowError:
        raise _Refused("Integer value too large to convert to float") from None
    if not math.isfinite(number):
        raise _Refused("A valid number is required.")
    if abs(number) > SAFE_INTEGER:
        raise _Refused(f"number out of range: numbers must be within ±{SAFE_INTEGER} (I-JSON)")
    if number < low:
        raise _Refused(f"Ensure this value is greater than or equal to {low}.")
    if high is not None and number > high:
        raise _Refused(f"Ensure this value is less than or equal to {high}.")
    return number


def _choice(value, choices: tuple) -> str:
    if value is None:
        raise _Refused("This field may not be null.")
    if type(value) is str and value in choices:
        return value
    raise _Refused(f'"{value}" is not a valid choice.')


def _object(value) -> dict:
    """A JSON object (DictField): the keys of a JSON object are already strings."""
    if value is None:
        raise _Refused("This field may not be null.")
    if type(value) is not dict:
        raise _Refused(f'Expected a dictionary of items but got type "{type(value).__name__}".')
    return value


def _fields(data: dict, fields: tuple, names: frozenset) -> dict:
    """The values of ``fields`` ((name, required, parse); ``names`` are theirs) in ``data``,
    or _Refused with the problems of all of them. Unknown names are refused first, alone."""
    unknown = data.keys() - names
    if unknown:
        raise _Refused(lines=[(name, "unknown field") for name in sorted(unknown)])
    values, lines = {}, []
    for name, required, parse in fields:
        value = data.get(name, _ABSENT)
        if value is _ABSENT:
            if required:
                lines.append((name, "This field is required."))
            continue
        try:
            values[name] = parse(value)
        except _Refused as refused:
            lines += [(f"{name}.{path}" if path else name, message) for path, message in refused.lines]
    if lines:
        raise _Refused(lines=lines)
    return values


CONSEQUENCE_FIELDS = (
    ("type", True, lambda value: _choice(value, CONSEQUENCE_TYPES)),
    ("amount", False, lambda value: _number(value, 0)),
    ("currency", False, lambda value: _text(value, blank=True, limit=None, currency=True)),
    ("risk_rating", False, lambda value: _choice(value, RISK_RATINGS)),
)
CONSEQUENCE_NAMES = frozenset(name for name, _required, _parse in CONSEQUENCE_FIELDS)


def _consequence(value) -> dict | None:
    if value is None:
        return None
    if type(value) is not dict:
        raise _Refused("expected a JSON object")
    consequence = _fields(value, CONSEQUENCE_FIELDS, CONSEQUENCE_NAMES)
    if consequence["type"] == "monetary" and "amount" not in consequence:
        raise _Refused(lines=[("amount", "required for a monetary consequence")])
    if consequence["type"] == "risk_rating" and "risk_rating" not in consequence:
        raise _Refused(lines=[("risk_rating", "required for a risk_rating consequence")])
    return consequence


REQUEST_FIELDS = (
    ("surface_id", True, _text),
    ("agent_id", True, _text),
    ("confidence", True, lambda value: _number(value, 0.0, 1.0)),
    ("process_id", False, lambda value: _text(value, blank=True)),
    ("consequence", False, _consequence),
    ("context", False, _object),
    ("request_id", False, lambda value: _text(value, blank=True, id_like=True)),
    ("request_source", False, lambda value: _text(value, blank=True, id_like=True)),
)
REQUEST_NAMES = frozenset(name for name, _required, _parse in REQUEST_FIELDS)


def parse_evaluation(data) -> EvaluationRequest:
    """The request in a decoded JSON body; Invalid with DRF's message when it is not one."""
    if type(data) is not dict:
        raise Invalid("No data provided" if data is None else "expected a JSON object")
    try:
        values = _fields(data, REQUEST_FIELDS, REQUEST_NAMES)
    except _Refused as refused:
        raise Invalid("; ".join(f"{path}: {message}" if path else message for path, message in refused.lines)) from None
    return EvaluationRequest(
        surface_id=values["surface_id"],
        agent_id=values["agent_id"],
        confidence=values["confidence"],
        request_source=values.get("request_source") or "api",
        request_id=values.get("request_id", ""),
        process_id=values.get("process_id", ""),
        consequence=values.get("consequence"),
        context=values.get("context") or {},
    )
