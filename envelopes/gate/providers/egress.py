"""The egress guard: every outbound HTTP call of an action (``builtin:http_api`` and a WASM
module's ``mandate.http``) goes through ``send``.

A call is vetted before any byte leaves: scheme http(s), method in ``allowed_methods``, host
in ``allowed_domains`` (exact, or ``*.suffix`` for any name under suffix), then the host is
resolved and refused when any address is private, loopback, link-local or reserved (unless
MANDATE_EGRESS_ALLOW_PRIVATE; cloud metadata never). The URL is parsed once, by httpx, so the
host we vet is the host httpx connects to. New connections go to the vetted address only
(the network backend refuses an unpinned host); pooled keep-alive connections were vetted
when they were opened. Every socket read and write is bounded by the call's wall-clock
deadline, so a server that trickles bytes cannot hold the call past ``timeout_seconds``.
Redirects are returned as they are, except a same-origin redirect of a GET or HEAD.
"""

import http.cookiejar
import os
import ssl
import threading
import time
from dataclasses import dataclass
from urllib.parse import urljoin

import certifi
import httpcore
import httpx
from django.conf import settings

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


class EgressRefused(Exception):
    """The rules refuse the call (nothing was sent, or the answer broke a limit)."""

    failure_class = "policy_violation"


class EgressFailed(Exception):
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


def vet(rules: EgressRules, method: str, url: str) -> tuple[httpx.URL, VettedTarget]:
    """The parsed URL and the address to connect to, or EgressRefused saying why."""
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
    private_ok = allow_private()
    if host in METADATA_HOSTS or (not private_ok and (host == "localhost" or host.endswith(".localhost"))):
        raise EgressRefused(f"domain {host} {PRIVATE_TARGET}")
    try:
        addresses = resolve(host, port)
    except (OSError, UnicodeError) as exc:
        raise EgressFailed(f"domain {host} does not resolve") from exc
    if not addresses:
        raise EgressFailed(f"domain {host} does not resolve")
    # Refused as a whole when any address is private: the client could be steered to it.
    if any(a in METADATA_ADDRESSES for a in addresses) or (
        not private_ok and not all(is_public_address(a) for a in addresses)
    ):
        raise EgressRefused(f"domain {host} {PRIVATE_TARGET}")
    return parsed, VettedTarget(host, port, addresses[0])


def send(
    rules: EgressRules,
    method: str,
    url: str,
    *,
    headers: dict[str, str] | None = None,
    content: bytes | None = None,
    deadline: float | None = None,
) -> HttpAnswer:
    """Send one request under ``rules`` and read the answer (at most max_response_bytes)
    before ``deadline`` (time.monotonic; default now + timeout_seconds)."""
    method = method.upper()
    if deadline is None:
        deadline = time.monotonic() + rules.timeout_seconds
    outbound = {k: v for k, v in (headers or {}).items() if k.lower() not in TRANSPORT_HEADERS}
    outbound.setdefault("User-Agent", USER_AGENT)
    for hop in range(MAX_SAME_ORIGIN_REDIRECTS + 1):
        parsed, target = vet(rules, method, url)
        answer = _exchange(parsed, target, method, outbound, content, deadline, rules.max_response_bytes)
        location = answer.headers.get("location")
        if answer.status in REDIRECT_STATUSES and location and method in ("GET", "HEAD"):
            following = urljoin(str(parsed), location)
            if hop < MAX_SAME_ORIGIN_REDIRECTS and _same_origin(parsed, following):
                url = following
                continue
        return answer
    return answer  # pragma: no cover - the loop always returns


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


def _exchange(parsed, target, method, headers, content, deadline, cap) -> HttpAnswer:
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise EgressTimeout("the action's time ran out")
    _local.pins = {(target.host, target.port): target.address}
    _local.deadline = deadline
    try:
        client = _client()
        request = client.build_request(method, parsed, headers=headers, content=content, timeout=remaining)
        response = client.send(request, stream=True)
        try:
            declared = response.headers.get("content-length", "")
            if declared.isdigit() and int(declared) > cap:
                raise EgressRefused(f"the response exceeds max_response_bytes ({cap})")
            body, size = [], 0
            for chunk in response.iter_bytes():
                size += len(chunk)
                if size > cap:
                    raise EgressRefused(f"the response exceeds max_response_bytes ({cap})")
                body.append(chunk)
        finally:
            response.close()
    except httpx.TimeoutException as exc:
        raise EgressTimeout(f"no complete answer from {target.host} within the action's timeout") from exc
    except httpx.HTTPError as exc:
        raise EgressFailed(f"the call to {target.host} failed ({type(exc).__name__})") from exc
    finally:
        _local.pins, _local.deadline = {}, None
    safe = {k.lower(): v for k, v in response.headers.items() if k.lower() in SAFE_RESPONSE_HEADERS}
    return HttpAnswer(response.status_code, safe, b"".join(body), response.headers.get("content-type", ""), target.host)


# --- the pooled client, pinned and deadline-bound --------------------------------------------

_local = threading.local()


def _clamp(timeout: float | None, expired: type[Exception]) -> float | None:
    deadline = getattr(_local, "deadline", None)
    if deadline is None:
        return timeout
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise expired("deadline passed")
    return remaining if timeout is None else min(timeout, remaining)


class _DeadlineStream(httpcore.NetworkStream):
    """A connection whose every read and write ends by the current call's deadline."""

    def __init__(self, inner: httpcore.NetworkStream):
        self._inner = inner

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._inner.read(max_bytes, _clamp(timeout, httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._inner.write(buffer, _clamp(timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self._inner.close()

    def start_tls(self, ssl_context, server_hostname=None, timeout=None) -> httpcore.NetworkStream:
        return _DeadlineStream(
            self._inner.start_tls(ssl_context, server_hostname, _clamp(timeout, httpcore.ConnectTimeout))
        )

    def get_extra_info(self, info: str):
        return self._inner.get_extra_info(info)


class _PinnedBackend(httpcore.SyncBackend):
    """Opens connections only to the address the current call vetted for that host."""

    def connect_tcp(self, host, port, timeout=None, local_address=None, socket_options=None):
        address = getattr(_local, "pins", {}).get((host, port))
        if address is None:
            raise httpcore.ConnectError("egress target was not vetted")
        timeout = _clamp(timeout, httpcore.ConnectTimeout)
        return _DeadlineStream(super().connect_tcp(address, port, timeout, local_address, socket_options))


class _PinnedTransport(httpx.HTTPTransport):
    def __init__(self):
        super().__init__(trust_env=False, retries=0)
        self._pool = httpcore.ConnectionPool(
            ssl_context=ssl.create_default_context(cafile=certifi.where()),
            max_connections=200,
            max_keepalive_connections=64,
            keepalive_expiry=30.0,
            retries=0,
            network_backend=_PinnedBackend(),
        )


def _no_cookies() -> http.cookiejar.CookieJar:
    """A jar that stores no cookie (no domain is allowed)."""
    return http.cookiejar.CookieJar(policy=http.cookiejar.DefaultCookiePolicy(allowed_domains=[]))


_clients: dict[int, httpx.Client] = {}
_clients_lock = threading.Lock()


def _client() -> httpx.Client:
    """One pooled client per process (a forked child builds its own)."""
    pid = os.getpid()
    client = _clients.get(pid)
    if client is None:
        with _clients_lock:
            client = _clients.get(pid)
            if client is None:
                # cookies=: the client is shared by every agent, so it must keep no cookie a
                # target sets (it would send it on other agents' calls)
                client = httpx.Client(
                    transport=_PinnedTransport(), trust_env=False, follow_redirects=False, cookies=_no_cookies()
                )
                _clients.clear()
                _clients[pid] = client
    return client
