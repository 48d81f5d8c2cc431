"""The action gate's receipts: issued inside the pipeline's transaction, signed, verifiable
from the published keys alone (docs/gate.md "Receipts").

The hash covers every field of the receipt but the signature and its kid, as stored (JSON as
it reads back from the column, timestamps as their six-digit UTC text); the signature covers
the hash's ASCII text, as LatchGate's server signs its ``result_hash`` field verbatim. The
active Ed25519 key is cached per process (``keys.active_signer``); the insert itself checks that
the cached kid is still the active key, so a key another process retired, or that a rolled-back
transaction never kept, is noticed without a query per receipt.
"""

import hashlib
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime

from cryptography.exceptions import InvalidSignature
from django.db import connection

from evidence.canonical import NonCanonical, canonical_json, format_timestamp, map_leaves
from evidence.choices import (
    FailureClass,
    KeyAlgorithm,
    KeyStatus,
    ResultKind,
    SignatureStatus,
    VerificationStatus,
)
from evidence.ids import uuid7_hex
from evidence.models import GATE_EVENTS, AuditEvent, Receipt, SigningKey
from evidence.services.chain import NotNative, json_native, native_copy, rows_json
from evidence.services.keys import (
    active_signer,
    b64url,
    b64url_decode,
    forget_active_signers,
    public_key_from_jwk,
)

HASH_PREFIX = "sha256:"
# Every field the hash covers, in the receipt document (``receipt_document``).
HASHED_FIELDS = (
    "receipt_id",
    "grant_id",
    "trace_id",
    "action_id",
    "session_id",
    "provider_module_digest",
    "provider_receipt",
    "normalized_result",
    "verification_outcome",
    "effect_evidence",
    "started_at",
    "finished_at",
    "failure_class",
)
# The gate's ids (docs/gate.md "Identifiers").
GATE_ID = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9._-]*$")

# The variant fields each tagged value carries: required (name, type) or none.
_RESULT_FIELDS = {
    ResultKind.SUCCESS: ("summary", str),
    ResultKind.PROVIDER_FAILURE: ("reason", str),
    ResultKind.INTERNAL_ERROR: ("reason", str),
    ResultKind.TIMEOUT: None,
    ResultKind.CANCELLED: None,
}
_OUTCOME_FIELDS = {
    VerificationStatus.VERIFIED: ("evidence", object),
    VerificationStatus.VERIFICATION_FAILED: ("reason", str),
    VerificationStatus.UNVERIFIABLE_DECLARED: None,
    VerificationStatus.PROVIDER_FAILED_BEFORE_VERIFICATION: None,
    VerificationStatus.SKIPPED: None,
}


class InvalidReceipt(ValueError):
    """The caller passed something a receipt cannot hold (a bug in the caller, not input)."""


def issue_receipt(**fields) -> Receipt:
    """Hash, sign and store one receipt, in the caller's transaction; return it as stored.
    The arguments are ``draft_receipt``'s."""
    receipt = draft_receipt(**fields)
    store_receipts([receipt])
    return receipt


def draft_receipt(
    *,
    grant_id: str,
    provider_module_digest: str,
    provider_receipt,
    normalized_result: Mapping,
    verification_outcome: Mapping,
    effect_evidence: list,
    started_at: datetime,
    finished_at: datetime,
    failure_class: str | None,
    trace_id: str,
    action_id: str,
    session_id: str | None = None,
    receipt_id: str | None = None,
) -> Receipt:
    """One receipt, checked, hashed and signed by the active key, not yet stored (the gate
    prepares its receipts outside the group commit that stores many at once)."""
    document = {
        "receipt_id": _gate_id("receipt_id", receipt_id) if receipt_id is not None else f"rcpt_{uuid7_hex()}",
        "grant_id": _gate_id("grant_id", grant_id),
        "trace_id": _gate_id("trace_id", trace_id),
        "action_id": _gate_id("action_id", action_id, 128),
        "session_id": _gate_id("session_id", session_id) if session_id is not None else None,
        "provider_module_digest": _text("provider_module_digest", provider_module_digest, 100),
        "provider_receipt": storable_json(provider_receipt),
        "normalized_result": _tagged("normalized_result", "kind", normalized_result, _RESULT_FIELDS),
        "verification_outcome": _tagged("verification_outcome", "status", verification_outcome, _OUTCOME_FIELDS),
        "effect_evidence": _evidence(effect_evidence),
        "started_at": _moment("started_at", started_at),
        "finished_at": _moment("finished_at", finished_at),
        "failure_class": _failure_class(failure_class),
    }
    receipt = _unsigned_receipt(document, result_hash_of(document))
    receipt.started_at, receipt.finished_at = started_at, finished_at
    _sign(receipt, *active_signer(KeyAlgorithm.ED25519))
    return receipt


def _unsigned_receipt(document: dict, result_hash: str) -> Receipt:
    """``Receipt(**document, result_hash=…)``, built positionally: Django's fast path for a
    model's fields (a third of the keyword path's cost, once per execution)."""
    values = {**document, "result_hash": result_hash, "receipt_signature": "", "signing_key_id": ""}
    return Receipt(*[values[field.attname] for field in Receipt._meta.concrete_fields])


def _sign(receipt: Receipt, kid: str, private) -> None:
    receipt.receipt_signature = private.sign(receipt.result_hash.encode("ascii")).hex()
    receipt.signing_key_id = kid


def store_receipts(receipts: list[Receipt]) -> None:
    """Store drafted receipts in the caller's transaction, all signed by the active key (one
    statement on Postgres). Receipts signed by a key that is no longer the active one (rotated
    elsewhere, or one a rolled-back transaction never kept) are signed again first."""
    if receipts:
        store_signed(receipts, _insert_while_key_active)


def store_signed(receipts: list[Receipt], insert: Callable[[list[Receipt], str], bool]) -> None:
    """``store_receipts`` with the caller's statement: ``insert(receipts, kid)`` writes them (and
    whatever must be written with them) only while ``kid`` is the active key, else writes
    nothing and answers False; the receipts are then signed again with the key read afresh."""
    for _ in range(2):
        kid, private = active_signer(KeyAlgorithm.ED25519)
        for receipt in receipts:
            if receipt.signing_key_id != kid:
                _sign(receipt, kid, private)
        if insert(receipts, kid):
            for receipt in receipts:
                receipt._state.adding, receipt._state.db = False, connection.alias
            return
        forget_active_signers()  # read the active key again
    raise RuntimeError("no active Ed25519 key to sign the receipt with")


def receipt_rows_json(receipts: list[Receipt]) -> str:
    """Receipts as the JSON ``jsonb_populate_recordset`` reads (every column)."""
    fields = Receipt._meta.concrete_fields
    return rows_json([{field.column: getattr(receipt, field.attname) for field in fields} for receipt in receipts])


def result_hash_of(document: Mapping) -> str:
    """``sha256:`` + hex SHA-256 of the RFC 8785 form of the hashed fields of ``document``
    (a receipt document: timestamps as their text). KeyError or NonCanonical if it has none."""
    core = {name: document[name] for name in HASHED_FIELDS}
    return HASH_PREFIX + hashlib.sha256(canonical_json(core)).hexdigest()


def receipt_document(receipt: Receipt) -> dict:
    """The receipt as LatchGate's JSON (plus the trace, action and session it belongs to);
    the timestamps are exactly the text that was hashed. An unsigned receipt has neither
    ``receipt_signature`` nor ``signing_key_id``, as LatchGate's."""
    document = {
        "receipt_id": receipt.receipt_id,
        "grant_id": receipt.grant_id,
        "provider_module_digest": receipt.provider_module_digest,
        "provider_receipt": receipt.provider_receipt,
        "normalized_result": receipt.normalized_result,
        "verification_outcome": receipt.verification_outcome,
        "effect_evidence": receipt.effect_evidence,
        "result_hash": receipt.result_hash,
        "receipt_signature": receipt.receipt_signature,
        "signing_key_id": receipt.signing_key_id,
        "started_at": format_timestamp(receipt.started_at),
        "finished_at": format_timestamp(receipt.finished_at),
        "failure_class": receipt.failure_class,
        "trace_id": receipt.trace_id,
        "action_id": receipt.action_id,
        "session_id": receipt.session_id,
    }
    if not receipt.receipt_signature:
        del document["receipt_signature"]
        if not receipt.signing_key_id:
            del document["signing_key_id"]
    return document


def find_receipt(receipt_id: str) -> Receipt | None:
    return Receipt.objects.filter(receipt_id=receipt_id).first()


def verify_receipt(receipt, jwks: Mapping | None = None) -> str:
    """``verified``, ``unsigned``, ``unknown_kid`` or ``signature_invalid`` for a receipt (a
    ``Receipt`` or its document), against ``jwks`` (a JWK set, e.g. ``GET /v1/receipt-keys``)
    or, without one, the platform's own keys.

    A signed receipt whose content no longer hashes to its ``result_hash`` is
    ``signature_invalid`` whatever its kid: the signature does not cover what is stored.
    """
    document = receipt if isinstance(receipt, Mapping) else receipt_document(receipt)
    signature = document.get("receipt_signature") or ""
    if not signature:
        return SignatureStatus.UNSIGNED
    result_hash = document.get("result_hash")
    try:
        if not isinstance(result_hash, str) or result_hash_of(document) != result_hash:
            return SignatureStatus.SIGNATURE_INVALID
    except (KeyError, NonCanonical):
        return SignatureStatus.SIGNATURE_INVALID
    public = _public_key(document.get("signing_key_id") or "", jwks)
    if public is None:
        return SignatureStatus.UNKNOWN_KID
    try:
        public.verify(bytes.fromhex(signature), result_hash.encode("ascii"))
    except (ValueError, TypeError, InvalidSignature):
        return SignatureStatus.SIGNATURE_INVALID
    return SignatureStatus.VERIFIED


def receipt_keys() -> dict:
    """Every Ed25519 key, active and retired, oldest first, as a JWK set: the standard members
    (``kty``, ``crv``, ``x``, ``kid``, ``alg``, ``use``) plus LatchGate's ``x_hex`` and ``added_at``."""
    keys = SigningKey.objects.filter(algorithm=KeyAlgorithm.ED25519).order_by("created_at", "pk")
    return {
        "keys": [
            {
                **key.public_jwk,
                "x_hex": b64url_decode(key.public_jwk["x"]).hex(),
                "added_at": format_timestamp(key.created_at),
            }
            for key in keys
        ]
    }


@dataclass
class ReceiptsVerdict:
    valid: bool
    receipts_checked: int
    broken_receipt_id: str | None = None
    status: str | None = None  # the broken receipt's signature status, or "missing"


MISSING = "missing"


def verify_receipts(batch_size: int = 2000) -> ReceiptsVerdict:
    """Check every receipt against the platform's keys, oldest first, stopping at the first
    that does not verify; then that every receipt a gate ledger event names exists."""
    keys = {
        key.kid: public_key_from_jwk(key.public_jwk)
        for key in SigningKey.objects.filter(algorithm=KeyAlgorithm.ED25519)
    }
    jwks_of_keys = _KeyIndex(keys)
    checked = 0
    for receipt in Receipt.objects.order_by("receipt_id").iterator(chunk_size=batch_size):
        checked += 1
        status = verify_receipt(receipt, jwks_of_keys)
        if status != SignatureStatus.VERIFIED:
            return ReceiptsVerdict(False, checked, receipt.receipt_id, status)
    missing = _named_but_missing()
    if missing:
        return ReceiptsVerdict(False, checked, missing, MISSING)
    return ReceiptsVerdict(True, checked)


def storable_json(value):
    """``value`` as a JSON column keeps it and JCS can hash it: I-JSON numbers
    (``json_native``), and strings (values and keys) with NUL and lone surrogates, which
    Postgres cannot store and RFC 8785 cannot write, replaced by U+FFFD. Provider output comes
    from outside, so a receipt holds what can be stored rather than failing after the effect."""
    try:
        return _storable_copy(value)  # plain JSON already: one pass
    except (NotNative, RecursionError):
        return map_leaves(json_native(value), _storable_leaf, key=_storable_text)


def _storable_copy(value):
    """``storable_json`` of a value that is already plain JSON (``native_copy``'s domain), in
    one copy; NotNative for anything else."""
    kind = type(value)
    if kind is str:
        return value if value.isascii() and "\x00" not in value else _storable_text(value)
    if kind is dict:
        copy = {}
        for key, item in value.items():
            if type(key) is not str:
                raise NotNative
            copy[key if key.isascii() and "\x00" not in key else _storable_text(key)] = _storable_copy(item)
        return copy
    if kind is list:
        return [_storable_copy(item) for item in value]
    if isinstance(value, str):
        return _storable_text(str.__str__(value))
    return native_copy(value)


def _storable_leaf(value):
    return _storable_text(value) if type(value) is str else value


def _storable_text(text: str) -> str:
    if "\x00" in text:
        text = text.replace("\x00", "\ufffd")
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            text = "".join("\ufffd" if "\ud800" <= char <= "\udfff" else char for char in text)
    return text


def _text(name: str, value, max_length: int) -> str:
    if type(value) is not str or not value or len(value) > max_length:
        raise InvalidReceipt(f"{name} must be a non-empty string of at most {max_length} characters")
    return value


def _gate_id(name: str, value, max_length: int = 64) -> str:
    _text(name, value, max_length)
    if not GATE_ID.match(value):
        raise InvalidReceipt(f"{name} must match {GATE_ID.pattern}")
    return value


def _tagged(name: str, tag: str, value, variants: dict) -> dict:
    if not isinstance(value, Mapping) or value.get(tag) not in variants:
        raise InvalidReceipt(f"{name}.{tag} must be one of {', '.join(variants)}")
    variant = variants[value[tag]]
    allowed = {tag, variant[0]} if variant else {tag}
    if set(value) - allowed:
        raise InvalidReceipt(f"{name} ({value[tag]}) holds only {', '.join(sorted(allowed))}")
    if variant and (variant[0] not in value or not isinstance(value[variant[0]], variant[1])):
        raise InvalidReceipt(f"{name} ({value[tag]}) needs {variant[0]}")
    return storable_json({key: value[key] for key in sorted(allowed) if key in value})


def _evidence(value) -> list:
    if not isinstance(value, list | tuple):
        raise InvalidReceipt("effect_evidence must be a list")
    return storable_json(list(value))


def _moment(name: str, value) -> str:
    if not isinstance(value, datetime) or value.tzinfo is None:
        raise InvalidReceipt(f"{name} must be a timezone-aware datetime")
    return format_timestamp(value)


_FAILURE_CLASSES = frozenset(FailureClass.values)


def _failure_class(value) -> str | None:
    if value is not None and value not in _FAILURE_CLASSES:
        raise InvalidReceipt(f"failure_class must be null or one of {', '.join(FailureClass.values)}")
    return None if value is None else str(value)


def _insert_while_key_active(receipts: list[Receipt], kid: str) -> bool:
    """Insert ``receipts`` if ``kid`` is the active key, with no query of its own for the key:
    False, nothing written, if it is not. Postgres: one statement for all of them."""
    meta = Receipt._meta
    quote = connection.ops.quote_name
    fields = meta.concrete_fields
    table, keys_table = quote(meta.db_table), quote(SigningKey._meta.db_table)
    columns = ", ".join(quote(field.column) for field in fields)
    active = f"WHERE EXISTS (SELECT 1 FROM {keys_table} WHERE kid = %s AND status = %s)"  # noqa: S608
    if connection.vendor == "postgresql":
        sql = (
            f"INSERT INTO {table} ({columns}) SELECT {columns} "  # noqa: S608 - quoted names; values are parameters
            f"FROM jsonb_populate_recordset(NULL::{table}, %s::jsonb) {active}"
        )
        with connection.cursor() as cursor:
            cursor.execute(sql, [receipt_rows_json(receipts), kid, KeyStatus.ACTIVE])
            return cursor.rowcount == len(receipts)
    placeholders = ", ".join(["%s"] * len(fields))
    sql = f"INSERT INTO {table} ({columns}) SELECT {placeholders} {active}"  # noqa: S608
    with connection.cursor() as cursor:
        for index, receipt in enumerate(receipts):
            values = [field.get_db_prep_save(getattr(receipt, field.attname), connection) for field in fields]
            cursor.execute(sql, [*values, kid, KeyStatus.ACTIVE])
            if cursor.rowcount != 1:
                if index:  # the key changed mid-way (SQLite: no concurrent writer can do that)
                    raise RuntimeError("the active Ed25519 key changed while receipts were stored")
                return False
    return True


# Public keys by kid, once read: a kid names one key forever (kids are random).
_public_keys: dict[str, object] = {}


class _KeyIndex(dict):
    """Public keys by kid, already parsed: what ``verify_receipts`` passes as its ``jwks``."""


def _public_key(kid: str, jwks: Mapping | None):
    if not kid:
        return None
    if isinstance(jwks, _KeyIndex):
        return jwks.get(kid)
    if jwks is not None:
        for jwk in jwks.get("keys", ()):
            if isinstance(jwk, Mapping) and jwk.get("kid") == kid:
                return _ed25519_of(jwk)
        return None
    public = _public_keys.get(kid)
    if public is None:
        key = SigningKey.objects.filter(kid=kid, algorithm=KeyAlgorithm.ED25519).first()
        if key is None:
            return None
        public = _public_keys[kid] = public_key_from_jwk(key.public_jwk)
    return public


def _ed25519_of(jwk: Mapping):
    """The Ed25519 public key of a JWK (``x``, or LatchGate's ``x_hex``); None for any other key."""
    if jwk.get("kty") != "OKP" or jwk.get("crv") != "Ed25519":
        return None
    try:
        if "x" in jwk:
            return public_key_from_jwk(dict(jwk))
        return public_key_from_jwk({"kty": "OKP", "crv": "Ed25519", "x": b64url(bytes.fromhex(jwk["x_hex"]))})
    except (ValueError, TypeError, KeyError):
        return None


def _named_but_missing() -> str | None:
    """A receipt id a gate ledger event names (``payload.receipt_id``) with no receipt, if any."""
    named = (
        AuditEvent.objects.filter(GATE_EVENTS, payload__has_key="receipt_id")
        .values_list("payload__receipt_id", flat=True)
        .iterator(chunk_size=2000)
    )
    pending: list[str] = []
    for receipt_id in named:
        if isinstance(receipt_id, str):
            pending.append(receipt_id)
        if len(pending) >= 2000:
            missing = _first_missing(pending)
            if missing:
                return missing
            pending = []
    return _first_missing(pending) if pending else None


def _first_missing(receipt_ids: list[str]) -> str | None:
    found = set(Receipt.objects.filter(receipt_id__in=receipt_ids).values_list("receipt_id", flat=True))
    return next((receipt_id for receipt_id in receipt_ids if receipt_id not in found), None)
