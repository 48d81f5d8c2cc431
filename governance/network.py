"""Where webhooks may go: https (http only when private targets are allowed), and never to
loopback, private, link-local, multicast, reserved or cloud-metadata addresses unless
MANDATE_WEBHOOK_ALLOW_PRIVATE is on. Checked at submit time and again at delivery time
(DNS may change between the two: rebinding), where the vetted address is the one the
connection is pinned to."""

import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

from django.conf import settings

METADATA_HOSTS = frozenset({"metadata.google.internal", "metadata", "instance-data"})
# Ranges ``ipaddress`` calls global that still reach internal hosts (RFC 6052 NAT64:
# 64:ff9b::7f00:1 is 127.0.0.1 behind a NAT64 gateway).
NON_PUBLIC_NETWORKS = (ipaddress.ip_network("64:ff9b::/96"),)
PRIVATE_TARGET = "resolves to a private or metadata address"


class TargetRefused(Exception):
    """A webhook URL the rule refuses; the message says why (and never shows the address)."""


@dataclass(frozen=True)
class Target:
    scheme: str
    host: str  # as in the URL (lower case, no trailing dot): the Host header and the TLS name
    port: int
    path: str  # path and query, what the request line carries
    address: str | None  # the vetted IP to connect to; None when not resolved


def allow_private() -> bool:
    return bool(getattr(settings, "MANDATE_WEBHOOK_ALLOW_PRIVATE", False))


def is_public_address(address: str) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    if any(ip in network for network in NON_PUBLIC_NETWORKS):
        return False
    return ip.is_global and not (ip.is_multicast or ip.is_reserved or ip.is_loopback or ip.is_link_local)


def resolve(host: str, port: int) -> list[str]:
    """The host's addresses in resolver order (an IP literal resolves to itself)."""
    infos = socket.getaddrinfo(host, port, proto=socket.IPPROTO_TCP)
    return list(dict.fromkeys(info[4][0] for info in infos))


def vet_webhook_url(url: str, *, pin: bool) -> Target:
    """The target ``url`` names, or TargetRefused. With ``pin`` the host is always resolved
    (and every address checked unless private targets are allowed), and the first address
    is the one to connect to; without it, resolving is skipped when private targets are
    allowed (a receiver that does not resolve yet is fine at submit time)."""
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise TargetRefused("must be an absolute https URL")
    private_ok = allow_private()
    if parts.scheme == "http" and not private_ok:
        raise TargetRefused("must use https")
    if parts.username or parts.password:
        raise TargetRefused("must not carry credentials")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as exc:
        raise TargetRefused("has an invalid port") from exc
    host = parts.hostname.lower().rstrip(".")
    if not host:
        raise TargetRefused("must be an absolute https URL")
    path = parts.path or "/"
    if parts.query:
        path = f"{path}?{parts.query}"
    target = Target(parts.scheme, host, port, path, None)
    if not private_ok and (host in METADATA_HOSTS or host == "localhost" or host.endswith(".localhost")):
        raise TargetRefused(PRIVATE_TARGET)
    if private_ok and not pin:
        return target
    try:
        addresses = resolve(host, port)
    except (OSError, UnicodeError) as exc:
        raise TargetRefused("host does not resolve") from exc
    if not addresses:
        raise TargetRefused("host does not resolve")
    # A name is refused as a whole when any of its addresses is private: the client
    # could otherwise be steered to that one.
    if not private_ok and not all(is_public_address(a) for a in addresses):
        raise TargetRefused(PRIVATE_TARGET)
    return Target(parts.scheme, host, port, path, addresses[0])


def check_webhook_url(url: str) -> str | None:
    """None when ``url`` is an acceptable webhook target; otherwise why not."""
    try:
        vet_webhook_url(url, pin=False)
    except TargetRefused as exc:
        return str(exc)
    return None
