"""The egress guard: every outbound HTTP call of an action (``builtin:http_api`` and a WASM
module's ``mandate.http``) goes through ``send_async`` (on the hot path's event loop) or
``send`` (the same, for callers that block).

A call is vetted before any byte leaves: scheme http(s), method in ``allowed_methods``, host
in ``allowed_domains`` (exact, or ``*.suffix`` for any name under suffix), then the host is
resolved and refused when any address is private, loopback, link-local or reserved (unless
MANDATE_EGRESS_ALLOW_PRIVATE; cloud metadata never). The URL is parsed once, by httpx, and
``wire`` connects to the vetted address of the host vetted: connections are opened to that
address and pooled under it, so keep-alive never carries a call to an address nobody vetted.
The whole exchange (resolving, connecting, TLS, every read and write) is bounded by the
call's wall-clock deadline, so a server that trickles bytes cannot hold the call past
``timeout_seconds``. No cookie is kept. Redirects are returned as they are, except a
same-origin redirect of a GET or HEAD.
"""

import asyncio
import ipaddress
import time
from dataclasses import dataclass
from urllib.parse import urljoin

import httpx
from django.conf import settings

from envelopes.gate.providers import wire
from governance.network import METADATA_HOSTS, PRIVATE_TARGET, is_public_address, resolve

MAX_SAME_ORIGIN_REDIRECTS = 3
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
USER_AGENT = "Mandate-Gate/1"
# Cloud metadata endpoints are refused even when private targets are allowed.
METADATA_ADDRESSES = frozenset({"169.254.169.254", "fd00:ec2::254", "100.100.100.200"})
# Response headers an action's output may show; cookies, auth challenges and server details stay out.
SAFE_RESPONSE_HEADERS = frozenset(
    {
        "content-type",
        "content-length",
        "content-language",
        "location",
        "etag",
        "last-modified",
        "date",
        "cache-control",
        "expires",
        "retry-after",
        "link",
        "x-request-id",
        "x-ratelimit-limit",
        "x-ratelimit-remaining",
        "x-ratelimit-reset",
    }
)
# Request headers a template may not set: the transport owns them.
TRANSPORT_HEADERS = frozenset({"host", "content-length", "transfer-encoding", "connection", "upgrade", "te"})


class EgressError(Exception):
    failure_class = "provider_error"


class EgressRefused(EgressError):
    """The rules refuse the call (nothing was sent, or the answer broke a limit)."""

    failure_class = "policy_violation"


class EgressFailed(EgressError):
    """The call could not be completed (DNS, connection, protocol)."""

    failure_class = "provider_error"


class EgressTimeout(EgressFailed):
    failure_class = "timeout"


@dataclass(frozen=True)
class EgressRules:
    profile: str
    allowed_domains: tuple[str, ...]
    allowed_methods: tuple[str, ...]
    max_response_bytes: int
    timeout_seconds: float

    @classmethod
    def for_plan(cls, plan) -> "EgressRules":
        return cls(
            plan.egress.profile,
            plan.egress.allowed_domains,
            plan.egress.allowed_methods,
            plan.io.max_response_bytes,
            float(plan.resource_limits.timeout_seconds),
        )


@dataclass(frozen=True)
class HttpAnswer:
    status: int
    headers: dict[str, str]  # the safe subset, lower-case names
    content: bytes
    content_type: str
    host: str


@dataclass(frozen=True)
class VettedTarget:
    host: str
    port: int
    address: str


def allow_private() -> bool:
    return bool(getattr(settings, "MANDATE_EGRESS_ALLOW_PRIVATE", False))


def host_allowed(host: str, allowed_domains) -> bool:
    """``host`` (lower case, IDNA) is listed exactly, or falls under a ``*.suffix`` entry
    (any depth; the suffix itself is not covered by its wildcard)."""
    host = host.lower().rstrip(".")
    for entry in allowed_domains:
        entry = entry.lower().rstrip(".")
        if entry.startswith("*."):
            if host.endswith(entry[1:]):
                return True
        elif host == entry:
            return True
    return False


def vet(rules: EgressRules, method: str, url: str) -> tuple[httpx.URL, str, int]:
    """The parsed URL, its host and port when the rules allow the call (before resolving),
    or EgressRefused saying why."""
    if rules.profile == "none":
        raise EgressRefused("the action's egress profile allows no network")
    if method not in rules.allowed_methods:
        raise EgressRefused(f"method {method} is not allowed for this action")
    try:
        parsed = httpx.URL(url)
        host = parsed.raw_host.decode("ascii").lower().rstrip(".")
    except (httpx.InvalidURL, UnicodeError, ValueError) as exc:
        raise EgressRefused("the URL is not valid") from exc
    if parsed.scheme not in ("https", "http") or not host:
        raise EgressRefused("the URL must be an absolute http or https URL")
    if not host_allowed(host, rules.allowed_domains):
        raise EgressRefused(f"domain {host} is not allowed for this action")
    if parsed.userinfo:
        raise EgressRefused("the URL must not carry credentials")
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    if host in METADATA_HOSTS or (not allow_private() and (host == "localhost" or host.endswith(".localhost"))):
        raise EgressRefused(f"domain {host} {PRIVATE_TARGET}")
    return parsed, host, port


def vet_addresses(host: str, port: int, addresses: list[str]) -> VettedTarget:
    """The address to connect to, when every address the host resolved to may be reached."""
    if not addresses:
        raise EgressFailed(f"domain {host} does not resolve")
    # Refused as a whole when any address is private: the client could be steered to it.
    if any(a in METADATA_ADDRESSES for a in addresses) or (
        not allow_private() and not all(is_public_address(a) for a in addresses)
    ):
        raise EgressRefused(f"domain {host} {PRIVATE_TARGET}")
    return VettedTarget(host, port, addresses[0])


async def _addresses(host: str, port: int) -> list[str]:
    """``resolve`` without blocking the loop: an IP literal is its own address; a name is
    resolved in the loop's executor."""
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        pass
    else:
        return [host.strip("[]")]
    loop = asyncio.get_running_loop()
    try:
        return await loop.run_in_executor(None, resolve, host, port)
    except (OSError, UnicodeError) as exc:
        raise EgressFailed(f"domain {host} does not resolve") from exc


async def send_async(
    rules: EgressRules,
    method: str,
    url: str,
    *,
    headers: dict[str, str] | None = None,
    content: bytes | None = None,
    deadline: float | None = None,
) -> HttpAnswer:
    """Send one request under ``rules`` and read the answer (at most max_response_bytes)
    before ``deadline`` (time.monotonic; default now + timeout_seconds), on the running loop."""
    method = method.upper()
    if deadline is None:
        deadline = time.monotonic() + rules.timeout_seconds
    outbound = {k: v for k, v in (headers or {}).items() if k.lower() not in TRANSPORT_HEADERS}
    if not any(k.lower() == "user-agent" for k in outbound):
        outbound["User-Agent"] = USER_AGENT
    for hop in range(MAX_SAME_ORIGIN_REDIRECTS + 1):
        parsed, host, port = vet(rules, method, url)
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise EgressTimeout("the action's time ran out")
        try:
            async with asyncio.timeout(remaining):
                target = vet_addresses(host, port, await _addresses(host, port))
                answer = await _exchange(parsed, target, method, outbound, content, rules.max_response_bytes)
        except TimeoutError as exc:
            raise EgressTimeout(f"no complete answer from {host} within the action's timeout") from exc
        location = answer.headers.get("location")
        if answer.status in REDIRECT_STATUSES and location and method in ("GET", "HEAD"):
            following = urljoin(str(parsed), location)
            if hop < MAX_SAME_ORIGIN_REDIRECTS and _same_origin(parsed, following):
                url = following
                continue
        return answer
    return answer  # pragma: no cover - the loop always returns


def send(rules: EgressRules, method: str, url: str, **options) -> HttpAnswer:
    """``send_async`` for a caller that blocks (Django's view, a WASM module's host call):
    run on this process's background loop."""
    return wire.run_blocking(send_async(rules, method, url, **options))


def _same_origin(current: httpx.URL, location: str) -> bool:
    try:
        following = httpx.URL(location)
    except (httpx.InvalidURL, ValueError):
        return False
    return (following.scheme, following.raw_host.lower(), following.port) == (
        current.scheme,
        current.raw_host.lower(),
        current.port,
    )


async def _exchange(parsed: httpx.URL, target: VettedTarget, method, headers, content, cap) -> HttpAnswer:
    origin = wire.Origin(parsed.scheme, target.host, target.port, target.address)
    try:
        payload = wire.request_bytes(
            method, parsed.raw_path.decode("ascii"), parsed.netloc.decode("ascii"), headers, content
        )
        reply = await wire.pool().exchange(origin, method, payload, cap)
    except wire.TooLarge as exc:
        raise EgressRefused(f"the response exceeds max_response_bytes ({cap})") from exc
    except wire.WireError as exc:
        raise EgressFailed(f"the call to {target.host} failed ({exc})") from exc
    safe = {name: value for name, value in reply.headers if name in SAFE_RESPONSE_HEADERS}
    content_type = next((value for name, value in reply.headers if name == "content-type"), "")
    return HttpAnswer(reply.status, safe, reply.content, content_type, target.host)
