"""The rules for the targets an action reaches: domains (egress) and paths (files).

Written once here and used by the catalogue (manifests' allowed_domains and path globs),
the learned targets, the policy's pre-checks and the providers.

Domains: an entry is a host name or ``*.suffix`` (any host under the suffix, not the suffix
itself), lower-cased, without a trailing dot. A learned domain must be public-looking: no
IP address, no ``localhost``, at least two labels, and a wildcard suffix that is not a
top-level or a common second-level registry suffix (``*.com``, ``*.co.uk``). Manifests are
written by operators, so they may also name ``localhost`` or an IP (the egress guard still
refuses private targets unless ``MANDATE_EGRESS_ALLOW_PRIVATE``).

Paths: relative to the session's fs_root, ``/``-separated, ``.`` for the root itself; a
glob's ``**`` is any number of whole segments, ``*`` and ``?`` stay within one segment,
``[...]`` is a class. No absolute paths, no ``..``, no backslashes or control characters.
"""

import ipaddress
import re
from functools import lru_cache

from governance.control_characters import has_control_characters

MAX_DOMAIN = 253
MAX_LABEL = 63
LABEL = re.compile(r"\A[a-z0-9](?:[a-z0-9-]*[a-z0-9])?\Z")
# Second-level labels under which registries sell names (co.uk, com.au, ...): a wildcard on
# them is as broad as *.com.
REGISTRY_SECOND_LEVELS = frozenset({"ac", "co", "com", "edu", "gov", "ltd", "mil", "net", "org", "plc", "ne", "or"})


class TargetError(ValueError):
    """A domain or path that is not acceptable; the message says why."""


def normalize_domain(value: str) -> str:
    if not isinstance(value, str):
        raise TargetError("must be a string")
    domain = value.strip().lower()
    if domain.endswith("."):
        domain = domain[:-1]
    if not domain:
        raise TargetError("must not be empty")
    if has_control_characters(domain) or any(ch.isspace() for ch in domain):
        raise TargetError("must not contain whitespace or control characters")
    return domain


def _is_ip(domain: str) -> bool:
    candidate = domain[1:-1] if domain.startswith("[") and domain.endswith("]") else domain
    try:
        ipaddress.ip_address(candidate)
    except ValueError:
        return False
    return True


def _check_labels(domain: str) -> None:
    if len(domain) > MAX_DOMAIN:
        raise TargetError(f"'{domain}' is longer than {MAX_DOMAIN} characters")
    for label in domain.split("."):
        if not label:
            raise TargetError(f"'{domain}' has an empty label")
        if len(label) > MAX_LABEL:
            raise TargetError(f"'{domain}' has a label longer than {MAX_LABEL} characters")
        if not LABEL.match(label):
            raise TargetError(
                f"'{domain}': only letters, digits and inner hyphens are allowed in a label (got '{label}')"
            )


def _check_wildcard(domain: str) -> None:
    suffix = domain[2:]
    if "*" in suffix:
        raise TargetError(f"'{domain}': only a leading '*.' wildcard is allowed")
    _check_labels(suffix)
    labels = suffix.split(".")
    if len(labels) < 2 or (len(labels) == 2 and len(labels[1]) == 2 and labels[0] in REGISTRY_SECOND_LEVELS):
        raise TargetError(f"'{domain}' is over-broad: the wildcard must sit under a registered domain")


def validate_learned_domain(value: str) -> str:
    """The normalized domain, or TargetError: what operators and approvals may teach."""
    domain = normalize_domain(value)
    if domain.startswith("*."):
        _check_wildcard(domain)
        return domain
    if "*" in domain:
        raise TargetError(f"'{domain}': only a leading '*.' wildcard is allowed")
    if _is_ip(domain):
        raise TargetError(f"'{domain}' is an IP address: learned domains must be host names")
    if domain == "localhost" or domain.endswith(".localhost"):
        raise TargetError(f"'{domain}' is a loopback name")
    if "." not in domain:
        raise TargetError(f"'{domain}' is a single label: a learned domain needs at least two")
    _check_labels(domain)
    return domain


def validate_manifest_domain(value: str) -> str:
    """The normalized domain, or TargetError: what a manifest may declare."""
    domain = normalize_domain(value)
    if _is_ip(domain) or domain == "localhost":
        return domain
    if domain.startswith("*."):
        _check_wildcard(domain)
        return domain
    if "*" in domain:
        raise TargetError(f"'{domain}': only a leading '*.' wildcard is allowed")
    _check_labels(domain)
    return domain


def host_of(host: str) -> str:
    """A request's host as the allowlist compares it."""
    host = host.strip().lower()
    return host[:-1] if host.endswith(".") else host


def domain_matches(entry: str, host: str) -> bool:
    if entry.startswith("*."):
        return host.endswith(entry[1:]) and len(host) > len(entry) - 1
    return host == entry


# --- paths ---------------------------------------------------------------------------------

MAX_PATH = 1024
CATCH_ALL = frozenset({"*", "**", "**/*", "./**", "**/**"})

# Paths a person should look at before an agent touches them, whatever the action's risk:
# environment files, secrets directories, SSH material, cloud and cluster credentials.
SENSITIVE_PATHS = (
    "**/.env",
    "**/.env.*",
    "**/secrets/**",
    "**/.ssh/**",
    "**/.aws/**",
    "**/.azure/**",
    "**/.gcloud/**",
    "**/.config/gcloud/**",
    "**/.kube/**",
    "**/.docker/config.json",
    "**/.netrc",
    "**/*credentials*.json",
)


def normalize_path(value: str) -> str:
    """A relative path in its one form (``a/b``), or TargetError if it is absolute, climbs
    out with ``..``, or holds backslashes or control characters."""
    if not isinstance(value, str):
        raise TargetError("must be a string")
    if not value or len(value) > MAX_PATH:
        raise TargetError(f"must be 1-{MAX_PATH} characters")
    if has_control_characters(value):
        raise TargetError("must not contain control characters")
    if "\\" in value:
        raise TargetError("must use '/' separators")
    if value.startswith("/"):
        raise TargetError("must be relative to the session's fs_root (no leading '/')")
    segments = [segment for segment in value.split("/") if segment not in ("", ".")]
    if ".." in segments:
        raise TargetError("must not contain '..'")
    return "/".join(segments) or "."  # "." is the fs_root itself


def validate_glob(value: str, *, learned: bool = False) -> str:
    """A path glob in its one form, or TargetError. Learned globs may not be catch-alls."""
    glob = normalize_path(value)
    if learned and glob in CATCH_ALL:
        raise TargetError(f"'{glob}' would allow every path")
    for segment in glob.split("/"):
        if "**" in segment and segment != "**":
            raise TargetError(f"'{glob}': '**' must be a whole path segment")
    try:
        compile_glob(glob)
    except re.error as exc:
        raise TargetError(f"'{glob}' is not a valid glob ({exc})") from exc
    return glob


def _segment_regex(segment: str) -> str:
    out, index = [], 0
    while index < len(segment):
        char = segment[index]
        if char == "*":
            out.append("[^/]*")
        elif char == "?":
            out.append("[^/]")
        elif char == "[":
            end = segment.find("]", index + 2)
            if end == -1:
                out.append(re.escape(char))
            else:
                body = segment[index + 1 : end]
                negate = body.startswith("!")
                body = body[1:] if negate else body
                out.append("[" + ("^" if negate else "") + body.replace("\\", "\\\\") + "]")
                index = end
        else:
            out.append(re.escape(char))
        index += 1
    return "".join(out)


@lru_cache(maxsize=4096)
def compile_glob(glob: str) -> re.Pattern:
    parts, segments = [], glob.split("/")
    for position, segment in enumerate(segments):
        last = position == len(segments) - 1
        if segment == "**":
            parts.append(".*" if last else "(?:[^/]+/)*")
        else:
            parts.append(_segment_regex(segment) + ("" if last else "/"))
    return re.compile("".join(parts) + r"\Z")


def glob_matches(glob: str, path: str) -> bool:
    return compile_glob(glob).match(path) is not None


def is_sensitive_path(path: str) -> bool:
    """The path (relative, normalized or not) is one a person must approve."""
    try:
        normalized = normalize_path(path)
    except TargetError:
        return True  # what cannot be placed under the root is never harmless
    return any(glob_matches(glob, normalized) for glob in SENSITIVE_PATHS)
