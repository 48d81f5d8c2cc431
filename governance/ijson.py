"""The values every entry accepts: I-JSON (RFC 7493), checked once at the edge.

Everything an entry accepts may end up in the evidence, which hashes it as RFC 8785 (JCS)
canonical JSON and stores it in a JSON column. Both agree byte for byte only inside this
domain, so it is enforced where input arrives (docs/input.md):

- numbers: integers within ±(2⁵³−1) and finite floats of magnitude at most 2⁵³−1 (a float
  such as ``1e16`` is an integer beyond that range: the database reads it back as one);
- strings and keys: no NUL (Postgres cannot store it) and no lone surrogates (not Unicode);
- objects and arrays nested at most ``MAX_DEPTH`` levels (the document itself is level 1).

The walk is iterative, so no input can exhaust the stack.
"""

import math

SAFE_INTEGER = 2**53 - 1
MAX_DEPTH = 32


class OutOfDomain(ValueError):
    """A value outside I-JSON's domain, with the path of the first one found."""

    def __init__(self, path: str, message: str):
        super().__init__(f"{path}: {message}" if path else message)
        self.path, self.message = path, message


def _child(path: str, key) -> str:
    if type(key) is int:
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else str(key)


def _text_problem(text: str) -> str | None:
    if "\x00" in text:
        return "must not contain NUL (U+0000)"
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            return "must not contain lone surrogates (U+D800 to U+DFFF)"
    return None


def _number_problem(value) -> str | None:
    if type(value) is int:
        ok = -SAFE_INTEGER <= value <= SAFE_INTEGER
    else:
        ok = math.isfinite(value) and -SAFE_INTEGER <= value <= SAFE_INTEGER
    return None if ok else f"number out of range: numbers must be finite and within ±{SAFE_INTEGER} (I-JSON)"


def check(value, path: str = "") -> None:
    """Raise OutOfDomain for the first value outside the domain (``path`` names where
    ``value`` sits, e.g. ``payload``). Values of other types (a YAML date) are the caller's."""
    stack = [(value, path, 1)]
    while stack:
        item, where, depth = stack.pop()
        kind = type(item)
        if kind is str:
            problem = _text_problem(item)
        elif kind is int or kind is float:
            problem = _number_problem(item)
        elif kind is dict or kind is list:
            if depth > MAX_DEPTH:
                raise OutOfDomain(where, f"nested deeper than {MAX_DEPTH} levels")
            children = []
            for key, child in item.items() if kind is dict else enumerate(item):
                if type(key) is str and (problem := _text_problem(key)):
                    raise OutOfDomain(_child(where, key.encode("utf-8", "backslashreplace").decode()), f"key {problem}")
                children.append((child, _child(where, key), depth + 1))
            stack.extend(reversed(children))  # document order
            continue
        else:
            continue
        if problem:
            raise OutOfDomain(where, problem)
