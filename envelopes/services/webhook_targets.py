"""Where webhooks may go: https (http only when private targets are allowed), and never to
loopback, private, link-local, multicast, reserved or cloud-metadata addresses unless
MANDATE_WEBHOOK_ALLOW_PRIVATE is on. Checked at submit time and again at delivery time
(DNS may change between the two: rebinding)."""

import ipaddress
import socket
from urllib.parse import urlsplit

from django.conf import settings

METADATA_HOSTS = frozenset({"metadata.google.internal", "metadata", "instance-data"})


def allow_private() -> bool:
    return bool(getattr(settings, "MANDATE_WEBHOOK_ALLOW_PRIVATE", False))


def is_public_address(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    return ip.is_global and not (ip.is_multicast or ip.is_reserved or ip.is_loopback or ip.is_link_local)


def resolve(host: str, port: int) -> list[str]:
    return sorted({info[4][0] for info in socket.getaddrinfo(host, port, proto=socket.IPPROTO_TCP)})


def check_webhook_url(url: str) -> str | None:
    """None when ``url`` is an acceptable webhook target; otherwise why not."""
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        return "must be an absolute https URL"
    if parts.scheme == "http" and not allow_private():
        return "must use https"
    if parts.username or parts.password:
        return "must not carry credentials"
    if allow_private():
        return None
    host = parts.hostname.lower().rstrip(".")
    if host in METADATA_HOSTS or host == "localhost" or host.endswith(".localhost"):
        return "resolves to a private or metadata address"
    try:
        addresses = resolve(host, parts.port or 443)
    except (OSError, UnicodeError):
        return "host does not resolve"
    if not addresses or not all(is_public_address(a) for a in addresses):
        return "resolves to a private or metadata address"
    return None
