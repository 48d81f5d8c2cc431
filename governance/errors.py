"""Domain errors: what services raise when a use case cannot go ahead.

They say what went wrong in the domain's words and carry no protocol: each API edge maps
them to its own status codes and bodies (``governance.api.errors`` for the MIDAS/AIOS
``{"error": ...}`` shape; later edges map them to their protocols' codes). Services never
import an ``api`` module.
"""


class DomainError(Exception):
    """Base class. ``message`` is for people; ``extra`` is carried into the error body."""

    def __init__(self, message: str, **extra):
        super().__init__(message)
        self.message = message
        self.extra = extra

    @property
    def error(self) -> str:
        return self.message


class Invalid(DomainError):
    """The input is malformed or breaks a rule of its own shape (``field: message``)."""

    def __init__(self, message: str, *, field: str | None = None, **extra):
        super().__init__(f"{field}: {message}" if field else message, **extra)
        self.field = field


class NotFound(DomainError):
    """The thing named does not exist, or not for this caller."""


class Refused(DomainError):
    """The caller may not do this (a rule about who acts, not about the input)."""

    def __init__(self, message: str, *, code: str = "forbidden", **extra):
        super().__init__(message, **extra)
        self.code = code


class Conflict(DomainError):
    """The thing is not in a state that allows this (already decided, already used)."""


class Gone(DomainError):
    """The thing existed but can no longer be used (an expired or spent invite)."""


class Unavailable(DomainError):
    """A dependency is down; the caller may retry."""


class GateError(DomainError):
    """An action-gate refusal in LatchGate's words: ``status`` and ``code`` are the wire's
    (the gate's API edge answers ``{"error": code}``, plus ``deny_reason`` or ``reason``)."""

    def __init__(self, status: int, code: str, *, deny_reason: str | None = None, reason: str | None = None):
        super().__init__(deny_reason or reason or code)
        self.status, self.code, self.deny_reason, self.reason = status, code, deny_reason, reason


class Exhausted(DomainError):
    """Nothing is left to use: an entitlement with no run left, expired, or none at all."""

    def __init__(self, message: str, *, code: str = "entitlement_exhausted", **extra):
        super().__init__(message, **extra)
        self.code = code


class OutOfOrder(DomainError):
    """A step came before the step it needs (run_start before consume, ...)."""

    def __init__(self, message: str, *, code: str = "out_of_order", **extra):
        super().__init__(message, **extra)
        self.code = code
