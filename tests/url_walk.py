"""Every URL pattern of the project as one concrete path, for tests that must cover them all."""

import re
from dataclasses import dataclass

from django.urls import URLResolver, get_resolver, resolve


@dataclass(frozen=True)
class UrlSample:
    route: str  # as ResolverMatch.route spells it
    view_name: str | None
    path: str


def _join_route(first: str, second: str) -> str:
    # How Django joins nested routes in ResolverMatch.route.
    return second if not first else first + second.removeprefix("^")


def _patterns(patterns, regex="", route="", namespace=""):
    for pattern in patterns:
        own_regex = pattern.pattern.regex.pattern.removeprefix("^")
        own_route = _join_route(route, str(pattern.pattern))
        if isinstance(pattern, URLResolver):
            inner = f"{namespace}:{pattern.namespace}" if namespace and pattern.namespace else pattern.namespace
            yield from _patterns(pattern.url_patterns, regex + own_regex, own_route, inner or namespace)
        else:
            name = pattern.name and (f"{namespace}:{pattern.name}" if namespace else pattern.name)
            yield regex + own_regex, own_route, name


# Values tried for a path parameter, in order; the first the parameter's regex takes is used.
PARAMETER_VALUES = ("1", "x", "6f1c1c8e-2b4d-4c8a-9a43-4d2f0b1e7a10")


def _closing(regex: str, start: int) -> int:
    """Index of the parenthesis closing the group opened at ``start``."""
    depth, index, in_class = 0, start, False
    while index < len(regex):
        char = regex[index]
        if char == "\\":
            index += 2
            continue
        if in_class:
            in_class = char != "]"
        elif char == "[":
            in_class = True
        elif char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
            if depth == 0:
                return index
        index += 1
    raise ValueError(f"unbalanced group in {regex!r}")


def _top_level_alternatives(body: str) -> list[str]:
    alternatives, depth, current, index = [], 0, "", 0
    while index < len(body):
        char = body[index]
        if char == "\\":
            current += body[index : index + 2]
            index += 2
            continue
        depth += {"(": 1, ")": -1}.get(char, 0)
        if char == "|" and depth == 0:
            alternatives.append(current)
            current = ""
        else:
            current += char
        index += 1
    return [*alternatives, current]


def sample_of(regex: str) -> str:
    """A string the URL regex matches: each parameter gets a value it accepts, optional groups
    and optional characters are left out, alternations take their first choice."""
    regex = regex.removeprefix("^").removesuffix("\\Z").removesuffix("$")
    out, index = "", 0
    while index < len(regex):
        char = regex[index]
        if char == "(":
            end = _closing(regex, index)
            group = regex[index + 1 : end]
            optional = regex[end + 1 : end + 2] == "?"
            if group.startswith("?P<"):
                body = group[group.index(">") + 1 :]
                choices = [*PARAMETER_VALUES, _top_level_alternatives(body)[0]]
                out += next(value for value in choices if re.fullmatch(body, value))
            elif not optional:
                out += sample_of(_top_level_alternatives(group.removeprefix("?:"))[0])
            index = end + (2 if optional else 1)
        elif char == "\\":
            out += regex[index + 1]
            index += 2
        elif regex[index + 1 : index + 2] == "?":
            index += 2  # an optional character: left out
        elif char in "^$":
            index += 1
        else:
            out += char
            index += 1
    return out


def url_samples() -> list[UrlSample]:
    samples, unsampled = [], []
    for regex, route, view_name in _patterns(get_resolver().url_patterns):
        path = "/" + sample_of(regex)
        if resolve(path).route != route:
            unsampled.append(route)
        samples.append(UrlSample(route, view_name, path))
    assert unsampled == [], f"no sample path resolves to these patterns; teach sample_of: {unsampled}"
    return samples
