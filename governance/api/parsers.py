"""The one strict JSON parser of every API body (the hot path uses it too): UTF-8 only, and
only I-JSON's values (``governance.ijson``: no NaN or Infinity, numbers within ±(2⁵³−1),
no NUL or lone surrogates, at most 32 levels deep). See docs/input.md."""

import json
import math

from django.utils.http import parse_header_parameters
from rest_framework.exceptions import ParseError, UnsupportedMediaType
from rest_framework.parsers import JSONParser

from governance import ijson

UTF_8 = frozenset({"utf-8", "utf8"})


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number out of range: {text[:40]}")
    return value


def _refuse_constant(name: str):
    raise ValueError(f"{name} is not valid JSON")


_decoder = json.JSONDecoder(parse_float=_finite, parse_constant=_refuse_constant)


def _loads(text: str):
    """``json.loads(text, parse_float=…, parse_constant=…)``, without building a decoder per body."""
    if text.startswith("\ufeff"):  # json.loads's own check, word for word
        raise json.JSONDecodeError("Unexpected UTF-8 BOM (decode using utf-8-sig)", text, 0)
    return _decoder.decode(text)


def parse_strict_json(body: bytes):
    """The value of a UTF-8 JSON body inside I-JSON's domain; ParseError naming the first
    value outside it."""
    try:
        value = _loads(body.decode("utf-8"))
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise ParseError(f"JSON parse error - {exc}") from exc
    try:
        ijson.check(value)
    except ijson.OutOfDomain as exc:
        raise ParseError(str(exc)) from exc
    return value


class StrictJSONParser(JSONParser):
    def parse(self, stream, media_type=None, parser_context=None):
        charset = parse_header_parameters(media_type or "")[1].get("charset", "utf-8")
        if charset.lower() not in UTF_8:
            raise UnsupportedMediaType(media_type, detail=f"charset {charset[:40]} is not accepted: send UTF-8 JSON")
        return parse_strict_json(stream.read() if stream is not None else b"")
