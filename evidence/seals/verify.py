"""Verifying an uploaded seal: parse it as hostile XML, read what it claims, re-draw it from
that, and check the signature (docs/seals.md "Verification").

The drawing is deterministic for its payload, so "the ring and the barcode encode this payload"
is checked by drawing them again from the payload read from the metadata and comparing element
by element with the uploaded ones (attribute order, quoting and whitespace between elements do
not matter; anything drawn does). The rest of the picture (labels, frame, metadata) is compared
the same way, so a label edited to show another principal is caught too.
"""

import base64
import binascii
import json
import re
import xml.etree.ElementTree as ET  # noqa: S405  (only our own rendering; uploads go through defusedxml)
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from functools import lru_cache

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from defusedxml import DefusedXmlException
from defusedxml.ElementTree import DefusedXMLParser, ParseError

from evidence.choices import KeyAlgorithm, KeyStatus
from evidence.models import SigningKey
from evidence.seals.payload import canonical_json, payload_problem
from evidence.seals.svg import BARCODE, PART, RING, SEAL_NS, SVG_NS, render_seal
from evidence.services.keys import public_key_from_jwk

MAX_SEAL_BYTES = 1024 * 1024
# Our seals have about 300 elements; anything far beyond is not one.
MAX_ELEMENTS = 4000

VERIFIED, INVALID, UNVERIFIED = "VERIFIED", "INVALID", "UNVERIFIED"
# How the key that checked the signature was known.
KEY_ACTIVE, KEY_RETIRED, KEY_SUPPLIED = "active", "retired", "supplied"
# The checks every verification reports, each True or False (docs/seals.md "Checks").
CHECKS = ("payload", "signature", "ring", "barcode", "drawing", "key_known")

_XLINK_NS = "http://www.w3.org/1999/xlink"
_XHTML_NS = "http://www.w3.org/1999/xhtml"
_FORBIDDEN_ELEMENTS = {"script", "foreignobject", "iframe", "embed", "object", "handler", "listener"}
_URL = re.compile(r"url\(\s*['\"]?\s*([^)'\"\s]*)", re.IGNORECASE)
_SCRIPT_SCHEME = re.compile(r"(javascript|vbscript)\s*:", re.IGNORECASE)


class SealUnreadable(ValueError):
    """Not something verification reads: oversized, not XML, hostile (a DTD, entities, external
    references, scripts, event handlers), or not a Mandate seal at all."""


@dataclass(frozen=True)
class SealVerification:
    status: str  # VERIFIED | INVALID | UNVERIFIED
    valid: bool  # status == VERIFIED
    seal_id: str | None
    payload: dict | None  # the signed payload as read (None when it is not JSON)
    kid: str | None
    checks: dict  # CHECKS (+ "bundle" for a bundle), each True or False
    key_status: str | None = None  # active | retired | supplied; None when the kid is unknown
    signature: str | None = None  # the signature as the metadata carries it (not in as_dict)
    problems: tuple[str, ...] = field(default=())  # what failed, in words

    def as_dict(self) -> dict:
        return {
            "status": self.status,
            "valid": self.valid,
            "seal_id": self.seal_id,
            "payload": self.payload,
            "kid": self.kid,
            "checks": dict(self.checks),
            "key_status": self.key_status,
            "problems": list(self.problems),
        }


def verify_seal(svg, *, public_keys=None) -> SealVerification:
    """Check a seal.svg (bytes or text). ``public_keys``: None for every Ed25519 key the
    database publishes (active and retired); a mapping ``{kid: key}``; or one key for whatever
    kid the seal names (offline). A key is a PEM (SubjectPublicKeyInfo), an Ed25519PublicKey or
    a JWK. SealUnreadable when it cannot be read as a seal; ValueError for a bad key."""
    keys = _key_source(public_keys)
    root = parse_seal(svg)
    claimed = _claims(root)
    payload, kid, signature_text = claimed.payload, claimed.kid, claimed.signature
    checks = dict.fromkeys(CHECKS, False)
    problems = list(claimed.problems)
    checks["payload"] = claimed.drawable and not problems
    if claimed.drawable:
        _compare_drawing(root, payload, signature_text or "", checks, problems)

    key, key_status = keys(kid) if kid is not None else (None, None)
    checks["key_known"] = key is not None
    if key is None:
        problems.append(f"key {kid!r} is not in the key set used" if kid else "the seal names no key")
    elif checks["payload"]:
        checks["signature"] = _signature_holds(key, payload, signature_text, problems)
    seal_id = payload.get("seal_id") if isinstance(payload, dict) else None
    return _verdict(
        SealVerification(
            status="",
            valid=False,
            seal_id=seal_id if isinstance(seal_id, str) else None,
            payload=payload,
            kid=kid,
            checks=checks,
            key_status=key_status,
            signature=signature_text,
            problems=tuple(problems),
        )
    )


def with_check(verification: SealVerification, name: str, passed: bool, problem: str | None) -> SealVerification:
    """``verification`` with one more check (the bundle's), its status recomputed."""
    problems = verification.problems + ((problem,) if problem and not passed else ())
    return _verdict(replace(verification, checks={**verification.checks, name: passed}, problems=problems))


def _verdict(verification: SealVerification) -> SealVerification:
    checks = verification.checks
    self_consistent = all(passed for name, passed in checks.items() if name not in ("signature", "key_known"))
    if not self_consistent or (checks["key_known"] and not checks["signature"]):
        status = INVALID
    elif not checks["key_known"]:
        status = UNVERIFIED
    else:
        status = VERIFIED
    return replace(verification, status=status, valid=status == VERIFIED)


# --- reading the upload ---------------------------------------------------------------


class _Builder(ET.TreeBuilder):
    """The tree, refusing processing instructions (an ``xml-stylesheet`` loads a stylesheet)."""

    def pi(self, target, data=None):
        raise SealUnreadable("processing instructions (such as xml-stylesheet) are not allowed in a seal")


def parse_seal(svg) -> ET.Element:
    """The root of a seal.svg read as hostile input; SealUnreadable for anything else."""
    if isinstance(svg, str):
        try:
            svg = svg.encode("utf-8")
        except UnicodeEncodeError:
            raise SealUnreadable("the seal is not valid UTF-8 text") from None
    if not isinstance(svg, bytes | bytearray | memoryview):
        raise SealUnreadable(f"a seal is SVG bytes or text, not {type(svg).__name__}")
    data = bytes(svg)
    if len(data) > MAX_SEAL_BYTES:
        raise SealUnreadable(f"the seal is larger than {MAX_SEAL_BYTES} bytes")
    if not data.strip():
        raise SealUnreadable("the seal is empty")
    parser = DefusedXMLParser(target=_Builder(), forbid_dtd=True, forbid_entities=True, forbid_external=True)
    try:
        parser.feed(data)
        root = parser.close()
    except DefusedXmlException as error:
        raise SealUnreadable(f"refused: {type(error).__name__} (DTDs, entities and external references)") from None
    except ParseError as error:
        raise SealUnreadable(f"not well-formed XML: {error}") from None
    except (ValueError, LookupError) as error:  # e.g. an unknown encoding declared
        if isinstance(error, SealUnreadable):
            raise
        raise SealUnreadable(f"not readable XML: {error}") from None
    _refuse_hostile(root)
    if root.tag != f"{{{SVG_NS}}}svg":
        raise SealUnreadable("not a seal: the document is not an SVG")
    return root


def _refuse_hostile(root: ET.Element) -> None:
    """SealUnreadable for anything active or fetching: scripts and embedded documents, event
    handlers, links and ``url(...)`` leaving the document, script URLs, stylesheet imports."""
    tags, names, values, count = {}, {}, [], 0  # dicts: the first offence in document order is named
    for element in root.iter():
        count += 1
        tags[element.tag] = None
        attributes = element.attrib
        if attributes:
            names.update(attributes)
            values.extend(attributes.values())
    if count > MAX_ELEMENTS:
        raise SealUnreadable(f"not a seal: more than {MAX_ELEMENTS} elements")
    for tag in tags:
        namespace, local = _split(tag)
        if local.lower() in _FORBIDDEN_ELEMENTS or namespace == _XHTML_NS:
            raise SealUnreadable(f"refused: a <{local}> element (scripts and embedded content)")
        if local.lower() == "style":
            values.extend(element.text or "" for element in root.iter(tag))
    links = []
    for name in names:
        local = _split(name)[1].lower()
        if local.startswith("on"):
            raise SealUnreadable(f"refused: an event handler attribute ({_split(name)[1]})")
        if local in ("href", "src"):
            links.append(name)
    for name in links:
        for element in root.iter():
            value = element.get(name)
            if value is not None and not value.strip().startswith("#"):
                raise SealUnreadable(f"refused: an external reference ({_split(name)[1]}={value[:60]!r})")
    text = "\x00".join(values)
    if _SCRIPT_SCHEME.search(text):
        raise SealUnreadable("refused: a script URL")
    lowered = text.lower()
    if "@import" in lowered:
        raise SealUnreadable("refused: a stylesheet import")
    if "url(" in lowered:
        for target in _URL.findall(text):
            if not target.startswith("#"):
                raise SealUnreadable(f"refused: an external reference (url({target[:60]}))")


def _split(tag) -> tuple[str, str]:
    if not isinstance(tag, str):
        return "", ""
    if tag.startswith("{"):
        namespace, _, local = tag[1:].partition("}")
        return namespace, local
    return "", tag


@dataclass
class _Claims:
    payload: object
    signature: str | None
    kid: str | None
    problems: list
    drawable: bool  # the payload has the seal's fields, each well-formed: it can be drawn


def _claims(root: ET.Element) -> _Claims:
    seal = list(root.iter(f"{{{SEAL_NS}}}seal"))
    if not seal:
        raise SealUnreadable("not a seal: the SVG carries no seal metadata (<seal:seal>)")
    problems = []
    if len(seal) > 1:
        problems.append("the SVG carries more than one <seal:seal>")

    def one(name: str) -> str | None:
        found = seal[0].findall(f"{{{SEAL_NS}}}{name}")
        if len(found) != 1:
            problems.append(f"the seal metadata must hold exactly one <seal:{name}>")
            return None
        return found[0].text or ""

    payload_text, signature, kid = one("payload"), one("signature"), one("kid")
    payload, drawable = None, False
    if payload_text is not None:
        payload, drawable = _payload(payload_text, problems)
    if drawable and kid is not None and payload["kid"] != kid:
        problems.append("the kid in the metadata is not the payload's kid")
    return _Claims(payload, signature, kid or None, problems, drawable)


def _payload(text: str, problems: list) -> tuple[dict | None, bool]:
    """The payload (None unless a JSON object) and whether it is well-formed enough to draw."""
    try:
        payload = json.loads(text)
    except (ValueError, RecursionError):
        problems.append("the payload is not JSON")
        return None, False
    problem = payload_problem(payload)
    if problem:
        problems.append(problem)
        return (payload if isinstance(payload, dict) else None), False
    if canonical_json(payload) != text.encode("utf-8"):
        problems.append("the payload is not in canonical form (sorted keys, compact separators)")
    return payload, True


# --- comparing the drawing -------------------------------------------------------------


def _compare_drawing(root: ET.Element, payload: dict, signature: str, checks: dict, problems: list) -> None:
    expected = ET.fromstring(render_seal(payload, signature).encode("utf-8"))  # noqa: S314  (our own text)
    for part in (RING, BARCODE):
        drawn, wanted = _parts(root, part), _parts(expected, part)
        checks[part] = len(drawn) == 1 and _same(drawn[0], wanted[0])
        if not checks[part]:
            problems.append(f"the {part} drawn is not the {part} of this payload")
    checks["drawing"] = _same_around_parts(root, expected)
    if not checks["drawing"]:
        problems.append("the picture (labels, frame or metadata) is not the one drawn for this payload")


def _parts(root: ET.Element, part: str) -> list:
    """The top-level groups marked as ``part`` (the ring and the barcode are drawn at the top level;
    one drawn elsewhere is caught by the drawing's comparison)."""
    return [child for child in root if child.get(PART) == part]


def _same(drawn: ET.Element, expected: ET.Element) -> bool:
    """Whether two subtrees are the same drawing: the same elements in the same order (pre-order,
    with their child counts), the same attributes, the same text; whitespace-only text is none."""
    left, right = list(drawn.iter()), list(expected.iter())
    return len(left) == len(right) and all(_same_element(a, b) for a, b in zip(left, right, strict=True))


def _same_element(a: ET.Element, b: ET.Element) -> bool:
    return (
        a.tag == b.tag
        and a.attrib == b.attrib
        and len(a) == len(b)
        and (a.text == b.text or _significant(a.text) == _significant(b.text))
        and (a.tail == b.tail or _significant(a.tail) == _significant(b.tail))
    )


def _same_around_parts(root: ET.Element, expected: ET.Element) -> bool:
    """``_same`` for the whole picture, the ring's and the barcode's contents aside (their own checks)."""
    if not _same_element(root, expected):
        return False
    for drawn, wanted in zip(root, expected, strict=True):
        if wanted.get(PART) in (RING, BARCODE):
            if drawn.tag != wanted.tag or drawn.attrib != wanted.attrib:
                return False
        elif not _same(drawn, wanted):
            return False
    return True


def _significant(text: str | None) -> str:
    return "" if text is None or not text.strip() else text


# --- the signature -----------------------------------------------------------------------


def _signature_holds(key, payload: dict, text: str | None, problems: list) -> bool:
    try:
        signature = base64.b64decode(text or "", validate=True)
    except (binascii.Error, ValueError):
        problems.append("the signature is not base64")
        return False
    if len(signature) != 64 or base64.b64encode(signature).decode() != text:
        problems.append("the signature is not 64 bytes in canonical base64")
        return False
    try:
        key.verify(signature, canonical_json(payload))
    except InvalidSignature:
        problems.append("the signature does not verify with the key")
        return False
    return True


def _key_source(public_keys):
    """A function kid -> (Ed25519 public key or None, key_status)."""
    if public_keys is None:
        return _published_key
    if isinstance(public_keys, Mapping) and not _is_jwk(public_keys):
        table = {str(kid): load_public_key(value) for kid, value in public_keys.items()}
        return lambda kid: (table[kid], KEY_SUPPLIED) if kid in table else (None, None)
    single = load_public_key(public_keys)
    return lambda kid: (single, KEY_SUPPLIED)


def _is_jwk(value: Mapping) -> bool:
    return "kty" in value


def load_public_key(value) -> ed25519.Ed25519PublicKey:
    """An Ed25519 public key from a PEM (SubjectPublicKeyInfo, text or bytes), a key object or
    a JWK; ValueError for anything else."""
    if isinstance(value, ed25519.Ed25519PublicKey):
        return value
    if isinstance(value, Mapping):
        try:
            key = public_key_from_jwk(dict(value))
        except (ValueError, KeyError, TypeError):
            raise ValueError("not an Ed25519 public key (JWK)") from None
    else:
        if isinstance(value, str):
            value = value.encode("utf-8", "replace")
        if not isinstance(value, bytes) or len(value) > 16384:
            raise ValueError("a public key is a PEM (SubjectPublicKeyInfo)")
        try:
            key = serialization.load_pem_public_key(value)
        except (ValueError, TypeError):
            raise ValueError("not a PEM public key (SubjectPublicKeyInfo)") from None
    if not isinstance(key, ed25519.Ed25519PublicKey):
        raise ValueError("the public key is not an Ed25519 key")
    return key


def keys_from_jwks(jwks) -> dict:
    """``{kid: key}`` for the Ed25519 keys of a JWK set (``/.well-known/jwks.json``); other keys
    are skipped. ValueError when it is not a JWK set."""
    if not isinstance(jwks, Mapping) or not isinstance(jwks.get("keys"), list):
        raise ValueError('a JWK set is an object with a "keys" list')
    keys = {}
    for jwk in jwks["keys"]:
        if isinstance(jwk, Mapping) and jwk.get("crv") == "Ed25519" and isinstance(jwk.get("kid"), str):
            keys[jwk["kid"]] = load_public_key(jwk)
    return keys


def _published_key(kid: str):
    row = SigningKey.objects.filter(kid=kid, algorithm=KeyAlgorithm.ED25519).values_list("public_jwk", "status").first()
    if row is None:
        return None, None
    jwk, status = row
    key = _jwk_key(json.dumps(jwk, sort_keys=True))
    return key, KEY_ACTIVE if status == KeyStatus.ACTIVE else KEY_RETIRED


@lru_cache(maxsize=256)
def _jwk_key(jwk_text: str):
    return load_public_key(json.loads(jwk_text))
