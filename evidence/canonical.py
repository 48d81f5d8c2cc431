"""The exact bytes Mandate hashes and signs: RFC 8785 (JCS) canonical JSON.

Timestamps are hashed as the string ``YYYY-MM-DDTHH:MM:SS.ffffffZ`` (UTC, always six
fractional digits) — the precision both Postgres and SQLite store, so a chain read
back from the database re-hashes to the same value.
"""

import hashlib
from datetime import UTC, datetime

import rfc8785


def canonical_json(value) -> bytes:
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
