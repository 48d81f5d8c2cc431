"""The exact bytes Mandate hashes and signs: RFC 8785 (JCS) canonical JSON.

Timestamps are hashed as the string ``YYYY-MM-DDTHH:MM:SS.ffffffZ`` (UTC, always six
fractional digits) — the precision both Postgres and SQLite store, so a chain read
back from the database re-hashes to the same value.
"""

import hashlib
import json
from datetime import UTC, datetime

import rfc8785

SAFE_INTEGER = 2**53 - 1


def _stdlib_is_exact(value) -> bool:
    """Whether ``json.dumps(sort_keys=True, ensure_ascii=False)`` writes exactly JCS for
    ``value``: true without floats (their text differs), unsafe integers, or keys outside
    the Basic Multilingual Plane (JCS sorts by UTF-16 code units). Strings escape alike."""
    stack = [value]
    while stack:
        item = stack.pop()
        if item is None or isinstance(item, bool | str):
            continue
        if isinstance(item, int):
            if -SAFE_INTEGER <= item <= SAFE_INTEGER:
                continue
            return False
        if isinstance(item, dict):
            for key, child in item.items():
                if not isinstance(key, str) or any(ord(ch) > 0xFFFF for ch in key):
                    return False
                stack.append(child)
        elif isinstance(item, list):
            stack.extend(item)
        else:
            return False
    return True


def canonical_json(value) -> bytes:
    """RFC 8785 bytes; the stdlib encoder where it is provably identical (much faster)."""
    if _stdlib_is_exact(value):
        return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    return rfc8785.dumps(value)


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def canonical_hash(value) -> str:
    return sha256_hex(canonical_json(value))


def format_timestamp(moment: datetime) -> str:
    if moment.tzinfo is None:
        raise ValueError("timestamps must be timezone-aware")
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


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
    return canonical_hash(
        {
            "chain_id": chain_id,
            "sequence_no": sequence_no,
            "event_type": event_type,
            "performer_type": performer_type,
            "performer_id": performer_id,
            "payload": payload,
            "occurred_at": format_timestamp(occurred_at),
            "prev_hash": prev_hash,
        }
    )


def ledger_hash(*, ledger_seq: int, event_hash: str, ledger_prev_hash: str) -> str:
    return canonical_hash({"ledger_seq": ledger_seq, "event_hash": event_hash, "ledger_prev_hash": ledger_prev_hash})
