"""Sign-In with Ethereum messages (EIP-4361), parsed exactly as the spec's ABNF says.

The ``siwe`` packages pin web3 < 8, so the grammar lives here: one regular expression per
ABNF rule, built from RFC 3986 (domain, URI, request id), RFC 3339 (timestamps) and EIP-55
(address checksums). Anything the grammar does not produce is refused as malformed.
"""

import re
from dataclasses import dataclass
from datetime import UTC, datetime

from eth_utils import to_checksum_address

# --- RFC 3986 -----------------------------------------------------------------
_UNRESERVED = r"A-Za-z0-9\-._~"
_SUB_DELIMS = r"!$&'()*+,;="
_PCT = r"%[0-9A-Fa-f]{2}"
_PCHAR = rf"(?:[{_UNRESERVED}{_SUB_DELIMS}:@]|{_PCT})"
_SCHEME = r"[A-Za-z][A-Za-z0-9+\-.]*"
_USERINFO = rf"(?:[{_UNRESERVED}{_SUB_DELIMS}:]|{_PCT})*"
_IP_LITERAL = rf"\[(?:[0-9A-Fa-f:.]+|[vV][0-9A-Fa-f]+\.[{_UNRESERVED}{_SUB_DELIMS}:]+)\]"
_REG_NAME = rf"(?:[{_UNRESERVED}{_SUB_DELIMS}]|{_PCT})*"  # covers IPv4address too
_HOST = rf"(?:{_IP_LITERAL}|{_REG_NAME})"
_AUTHORITY = rf"(?:{_USERINFO}@)?{_HOST}(?::[0-9]*)?"
_SEGMENT = rf"{_PCHAR}*"
_SEGMENT_NZ = rf"{_PCHAR}+"
_HIER_PART = (
    rf"(?://{_AUTHORITY}(?:/{_SEGMENT})*"  # "//" authority path-abempty
    rf"|/(?:{_SEGMENT_NZ}(?:/{_SEGMENT})*)?"  # path-absolute
    rf"|{_SEGMENT_NZ}(?:/{_SEGMENT})*"  # path-rootless
    r"|)"  # path-empty
)
_QUERY = rf"(?:{_PCHAR}|[/?])*"
_URI = rf"{_SCHEME}:{_HIER_PART}(?:\?{_QUERY})?(?:#{_QUERY})?"

# --- RFC 3339 date-time (ABNF strings are case-insensitive: "t" and "z" too) ---
_DATE_TIME = r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]+)?(?:[Zz]|[+\-][0-9]{2}:[0-9]{2})"

# --- EIP-4361 -------------------------------------------------------------------
_RESERVED = r":/?#\[\]@" + _SUB_DELIMS
_MESSAGE = re.compile(
    rf"(?:(?P<scheme>{_SCHEME})://)?(?P<domain>{_AUTHORITY})"
    r" wants you to sign in with your Ethereum account:\n"
    r"(?P<address>0x[0-9A-Fa-f]{40})\n"
    r"\n"
    rf"(?:(?P<statement>[{_RESERVED}{_UNRESERVED} ]*)\n)?"
    r"\n"
    rf"URI: (?P<uri>{_URI})\n"
    r"Version: (?P<version>1)\n"
    r"Chain ID: (?P<chain_id>[0-9]+)\n"
    r"Nonce: (?P<nonce>[A-Za-z0-9]{8,})\n"
    rf"Issued At: (?P<issued_at>{_DATE_TIME})"
    rf"(?:\nExpiration Time: (?P<expiration_time>{_DATE_TIME}))?"
    rf"(?:\nNot Before: (?P<not_before>{_DATE_TIME}))?"
    rf"(?:\nRequest ID: (?P<request_id>{_PCHAR}*))?"
    rf"(?:\nResources:(?P<resources>(?:\n- {_URI})*))?",
)
_AUTHORITY_OF_URI = re.compile(rf"{_SCHEME}://(?:{_USERINFO}@)?(?P<hostport>{_HOST}(?::[0-9]*)?)")

# Far beyond any real message; bounds the regular expression's work on hostile input.
MAX_MESSAGE_CHARS = 16 * 1024
# EIP-155 chain ids are uint256 at most.
_MAX_CHAIN_ID = 2**256 - 1


class MalformedMessage(ValueError):
    """The text is not an EIP-4361 message (the reason says where it departs)."""


class BadChecksum(ValueError):
    """A mixed-case address whose capitalization is not its EIP-55 checksum."""


def checksum_address(address: str) -> str:
    """EIP-55: ``0x`` + the hex digits, capitalized where the address's Keccak-256 says so."""
    return to_checksum_address(address)


def checksummed(address: str) -> str:
    """The EIP-55 form of a hex address given in lower case, upper case, or already EIP-55;
    BadChecksum for any other capitalization (a typo the checksum caught)."""
    result = checksum_address(address)
    digits = address[2:]
    if digits != digits.lower() and digits != digits.upper() and address != result:
        raise BadChecksum(f"address {address} is not EIP-55 checksummed (expected {result})")
    return result


def parse_datetime(text: str) -> datetime:
    """An RFC 3339 date-time (already matched by the grammar) as an aware datetime.
    Fractions beyond microseconds are truncated; a leap second (``:60``) is refused."""
    head, _, rest = text.upper().partition(".")
    if rest:
        digits = re.match(r"[0-9]+", rest).group()
        head = f"{head}.{digits[:6]}{rest[len(digits) :]}"
    try:
        return datetime.fromisoformat(head.replace("Z", "+00:00")).astimezone(UTC)
    except (ValueError, OverflowError) as exc:
        raise MalformedMessage(f"not a valid date-time: {text}") from exc


@dataclass(frozen=True)
class SiweMessage:
    scheme: str | None
    domain: str
    address: str  # EIP-55 checksummed
    statement: str | None
    uri: str
    version: str
    chain_id: int
    nonce: str
    issued_at: datetime
    expiration_time: datetime | None
    not_before: datetime | None
    request_id: str | None
    resources: tuple[str, ...]

    @classmethod
    def parse(cls, text: str) -> "SiweMessage":
        if not isinstance(text, str) or len(text) > MAX_MESSAGE_CHARS:
            raise MalformedMessage("not a message of at most 16 KiB")
        match = _MESSAGE.fullmatch(text)
        if match is None:
            raise MalformedMessage("not an EIP-4361 message")
        fields = match.groupdict()
        address = checksummed(fields["address"])
        chain_id = int(fields["chain_id"])
        if chain_id > _MAX_CHAIN_ID:
            raise MalformedMessage("Chain ID out of range")
        resources = fields["resources"]
        return cls(
            scheme=fields["scheme"],
            domain=fields["domain"],
            address=address,
            statement=fields["statement"],
            uri=fields["uri"],
            version=fields["version"],
            chain_id=chain_id,
            nonce=fields["nonce"],
            issued_at=parse_datetime(fields["issued_at"]),
            expiration_time=parse_datetime(fields["expiration_time"]) if fields["expiration_time"] else None,
            not_before=parse_datetime(fields["not_before"]) if fields["not_before"] else None,
            request_id=fields["request_id"],
            resources=tuple(resources[3:].split("\n- ")) if resources else (),
        )

    @property
    def uri_authority(self) -> str | None:
        """The URI's host[:port] when it has an authority (``scheme://``), else None."""
        match = _AUTHORITY_OF_URI.match(self.uri)
        return match.group("hostport") if match else None


def format_message(
    *,
    domain: str,
    address: str,
    uri: str,
    chain_id: int,
    nonce: str,
    issued_at: datetime,
    statement: str | None = None,
    expiration_time: datetime | None = None,
    not_before: datetime | None = None,
    request_id: str | None = None,
    resources: tuple[str, ...] = (),
    scheme: str | None = None,
) -> str:
    """The EIP-4361 text for these fields, as a wallet would show it (tests, benchmarks, docs)."""

    def stamp(value: datetime) -> str:
        return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")

    origin = f"{scheme}://{domain}" if scheme else domain
    lines = [f"{origin} wants you to sign in with your Ethereum account:", address, ""]
    if statement is not None:
        lines.append(statement)
    lines += ["", f"URI: {uri}", "Version: 1", f"Chain ID: {chain_id}", f"Nonce: {nonce}"]
    lines.append(f"Issued At: {stamp(issued_at)}")
    if expiration_time:
        lines.append(f"Expiration Time: {stamp(expiration_time)}")
    if not_before:
        lines.append(f"Not Before: {stamp(not_before)}")
    if request_id is not None:
        lines.append(f"Request ID: {request_id}")
    if resources:
        lines.append("Resources:")
        lines += [f"- {resource}" for resource in resources]
    return "\n".join(lines)


__all__ = ["BadChecksum", "MalformedMessage", "SiweMessage", "checksum_address", "checksummed", "format_message"]
