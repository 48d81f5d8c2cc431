"""Django's Host check for the ASGI routes answered in front of Django (the hot path,
the long-poll): one rule everywhere, so a Host Django refuses is refused there too."""

from django.conf import settings
from django.http.request import split_domain_port, validate_host


class AllowedHosts:
    """Django's Host check (``request.get_host()``, which its CommonMiddleware calls on every
    request and answers 400 when it fails), remembered per header value."""

    def __init__(self):
        self.allowed = settings.ALLOWED_HOSTS
        if settings.DEBUG and not self.allowed:
            self.allowed = [".localhost", "127.0.0.1", "[::1]"]
        self.forwarded = settings.USE_X_FORWARDED_HOST
        self._seen: dict[bytes, bool] = {}

    def allow(self, headers) -> bool:
        host = headers.get(b"x-forwarded-host") if self.forwarded else None
        if host is None:
            host = headers.get(b"host")
        if host is None:
            return False  # Django would rebuild it from the server's name: let it
        allowed = self._seen.get(host)
        if allowed is None:
            domain, _port = split_domain_port(host.decode("latin-1"))
            allowed = bool(domain) and validate_host(domain, self.allowed)
            if len(self._seen) < 1024:
                self._seen[host] = allowed
        return allowed
