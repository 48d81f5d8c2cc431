"""The exact bytes Mandate hashes and signs: RFC 8785 (JCS) canonical JSON.

Timestamps are hashed as the string ``YYYY-MM-DDTHH:MM:SS.ffffffZ`` (UTC, always six
fractional digits) — the precision both Postgres and SQLite store, so a chain read
back from the database re-hashes to the same value.
"""

import hashlib
import json
import json.encoder
from datetime import UTC, datetime

import rfc8785

SAFE_INTEGER = 2**53 - 1


# Floats whose JCS text (ECMAScript Number::toString) is Python's repr: non-integral and
# 1e-4 <= |x| < 1e16 (outside that range repr switches to exponents at other points).
_REPR_LOW, _REPR_HIGH = 1e-4, 1e16


def _stdlib_form(value):
    """``value`` with integral floats as ints, if ``json.dumps(sort_keys=True,
    ensure_ascii=False)`` then writes exactly JCS; None otherwise (unsafe integers, floats
    whose text differs, keys outside the Basic Multilingual Plane: JCS sorts by UTF-16 code
    units). Strings escape alike."""
    if value is None or value is True or value is False or type(value) is str:
        return value
    kind = type(value)
    if kind is int:
        return value if -SAFE_INTEGER <= value <= SAFE_INTEGER else None
    if kind is float:
        if value.is_integer():
            return int(value) if -SAFE_INTEGER <= value <= SAFE_INTEGER else None
        return value if _REPR_LOW <= abs(value) < _REPR_HIGH else None
    if kind is dict:
        out = {}
        for key, child in value.items():
            if type(key) is not str or not (key.isascii() or max(key) <= "\uffff"):
                return None
            if child is None or type(child) is str:
                out[key] = child
                continue
            converted = _stdlib_form(child)
            if converted is None:
                return None
            out[key] = converted
        return out
    if kind is list:
        out = []
        for child in value:
            converted = _stdlib_form(child) if child is not None else None
            if converted is None and child is not None:
                return None
            out.append(converted)
        return out
    return None


def map_leaves(value, leaf, key=None):
    """A copy of a JSON tree (dicts and lists) with ``leaf`` applied to every other value
    (and ``key``, if given, to every object key). Iterative, so a tree of any depth is copied
    without recursion."""
    if type(value) is not dict and type(value) is not list:
        return leaf(value)
    root = {} if type(value) is dict else []
    stack = [(value, root)]
    while stack:
        source, target = stack.pop()
        for name, child in source.items() if type(source) is dict else enumerate(source):
            if type(child) is dict or type(child) is list:
                copy = {} if type(child) is dict else []
                stack.append((child, copy))
            else:
                copy = leaf(child)
            if type(target) is dict:
                target[name if key is None else key(name)] = copy
            else:
                target.append(copy)
    return root


_sorted_compact = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode


class NonCanonical(ValueError):
    """A value JCS cannot write: a number outside I-JSON's domain (an integer beyond
    ±(2⁵³−1), NaN, an infinity), a lone surrogate, a non-JSON type, or nesting too deep."""


def canonical_json(value) -> bytes:
    """RFC 8785 bytes; the stdlib encoder where it is provably identical (much faster).
    NonCanonical when ``value`` has none."""
    try:
        form = _stdlib_form(value)
        if form is not None or value is None:
            return _sorted_compact(form).encode()
        return rfc8785.dumps(value)
    except (rfc8785.CanonicalizationError, UnicodeEncodeError, TypeError, ValueError, RecursionError) as exc:
        raise NonCanonical(f"no canonical JSON: {type(exc).__name__}") from None


def legacy_form(value):
    """``value`` as writers before I-JSON's number domain was enforced at the edge hashed it,
    or None when it cannot have been written so.

    Those writers stored integers beyond ±(2⁵³−1) as strings, but kept a float such as
    ``1e16`` a float: it was hashed as JCS writes that float (``1e+16``) and Postgres reads
    it back as the integer ``10000000000000000``. An integer the float converts back to
    exactly is such a float; any other integer beyond the range was never written by Mandate.
    """
    kind = type(value)
    if kind is int and not -SAFE_INTEGER <= value <= SAFE_INTEGER:
        try:
            number = float(value)
        except OverflowError:
            return None
        return number if number == value else None
    if kind is not dict and kind is not list:
        return value
    # Iterative: a copy of a tree of any depth.
    root = {} if kind is dict else []
    stack = [(value, root)]
    while stack:
        source, target = stack.pop()
        for key, child in source.items() if type(source) is dict else enumerate(source):
            child_kind = type(child)
            if child_kind is dict or child_kind is list:
                copy = {} if child_kind is dict else []
                stack.append((child, copy))
            else:
                copy = legacy_form(child)
                if copy is None and child is not None:
                    return None
            if type(target) is dict:
                target[key] = copy
            else:
                target.append(copy)
    return root


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def canonical_hash(value) -> str:
    return sha256_hex(canonical_json(value))


_last_timestamp: tuple = (None, "")  # (moment, text): the events of one append share it


def format_timestamp(moment: datetime) -> str:
    global _last_timestamp
    last = _last_timestamp
    if last[0] is moment:
        return last[1]
    if moment.tzinfo is None:
        raise ValueError("timestamps must be timezone-aware")
    utc = moment.astimezone(UTC)
    if utc.year >= 1000:  # isoformat's text is strftime's there (%Y pads to four digits)
        text = utc.isoformat(timespec="microseconds")[:-6] + "Z"
    else:
        text = utc.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    _last_timestamp = (moment, text)
    return text


# A JSON string as JCS writes it: the stdlib escapes exactly the same characters.
_string = json.encoder.encode_basestring


def event_hash(
    *,
    chain_id: str,
    sequence_no: int,
    event_type: str,
    performer_type: str,
    performer_id: str,
    payload,
    occurred_at: datetime,
    prev_hash: str,
) -> str:
    stamp = format_timestamp(occurred_at)
    return event_hash_at(stamp, chain_id, sequence_no, event_type, performer_type, performer_id, payload, prev_hash)


def event_hash_at(
    stamp: str, chain_id, sequence_no, event_type, performer_type, performer_id, payload, prev_hash
) -> str:
    """``event_hash`` with ``occurred_at`` already written as its hashed text (``stamp``)."""
    if type(sequence_no) is not int or not all(
        type(text) is str for text in (chain_id, event_type, performer_type, performer_id, prev_hash)
    ):
        return canonical_hash(
            {
                "chain_id": chain_id,
                "sequence_no": sequence_no,
                "event_type": event_type,
                "performer_type": performer_type,
                "performer_id": performer_id,
                "payload": payload,
                "occurred_at": stamp,
                "prev_hash": prev_hash,
            }
        )
    # The same JCS bytes, written field by field in JCS's key order: only the payload
    # needs the general encoder.
    return sha256_hex(
        b"".join(
            (
                f'{{"chain_id":{_string(chain_id)},"event_type":{_string(event_type)},'
                f'"occurred_at":{_string(stamp)},"payload":'.encode(),
                canonical_json(payload),
                f',"performer_id":{_string(performer_id)},"performer_type":{_string(performer_type)},'
                f'"prev_hash":{_string(prev_hash)},"sequence_no":{sequence_no}}}'.encode(),
            )
        )
    )


def ledger_hash(*, ledger_seq: int, event_hash: str, ledger_prev_hash: str) -> str:
    if type(ledger_seq) is int and _is_hex(event_hash) and (_is_hex(ledger_prev_hash) or ledger_prev_hash == ""):
        return hex_ledger_hash(ledger_seq, event_hash, ledger_prev_hash)
    return canonical_hash({"ledger_seq": ledger_seq, "event_hash": event_hash, "ledger_prev_hash": ledger_prev_hash})


def hex_ledger_hash(ledger_seq: int, event_hash: str, ledger_prev_hash: str) -> str:
    """``ledger_hash`` for hex digests (no character needs escaping): the JCS text directly."""
    return hashlib.sha256(
        f'{{"event_hash":"{event_hash}","ledger_prev_hash":"{ledger_prev_hash}","ledger_seq":{ledger_seq}}}'.encode()
    ).hexdigest()


_HEX = frozenset("0123456789abcdef")


def _is_hex(text) -> bool:
    return type(text) is str and len(text) == 64 and _HEX.issuperset(text)
