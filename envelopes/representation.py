"""The one wire representation of an envelope (MIDAS's five sections).

Every endpoint that returns an envelope — the envelope reads, the escalation queue, the
decision-by-request lookup, the evidence packet — renders it with
:func:`envelope_representation`. :class:`EnvelopeSerializer` renders through the same
function and exists so drf-spectacular can describe the shape.

Timestamps are RFC 3339 in UTC with microseconds (``2026-04-18T09:12:04.113000Z``),
``null`` when unset. ``submitted.raw`` is the request JSON as received, parsed with
``json.loads`` so its key order is preserved; a body that is not JSON stays a string.
"""

import json

from governance.timestamps import rfc3339


def submitted_raw(text: str):
    """The submitted body as JSON (key order kept), or the text itself when it is not JSON."""
    try:
        return json.loads(text)
    except (TypeError, ValueError):
        return text


def envelope_representation(envelope) -> dict:
    """The MIDAS envelope JSON for one :class:`envelopes.models.Envelope`."""
    structure = envelope.structure or {}
    body = {
        "identity": {
            "id": str(envelope.id),
            "request_source": envelope.request_source,
            "request_id": envelope.request_id,
            "schema_version": int(envelope.schema_version),  # MIDAS sends the integer 1
        },
        "submitted": {
            "raw": submitted_raw(envelope.submitted_raw),
            "received_at": rfc3339(envelope.received_at),
        },
        "resolved": {
            "authority": {
                "surface_id": envelope.surface_id,
                "surface_version": envelope.surface_version,
                "profile_id": envelope.profile_id,
                "profile_version": envelope.profile_version,
                "agent_id": envelope.agent_id,
                "grant_id": envelope.grant_id,
            },
            "structure": {
                "process": structure.get("process"),
                "business_service": structure.get("business_service"),
                "capabilities": structure.get("capabilities") or [],
            },
        },
        "evaluation": {
            "outcome": envelope.outcome,
            "reason_code": envelope.reason_code,
            "evaluated_at": rfc3339(envelope.evaluated_at),
            "explanation": envelope.explanation or {},
        },
        "integrity": {
            "audit_event_ids": list(envelope.audit_event_ids or []),
            "first_event_hash": envelope.first_event_hash,
            "final_event_hash": envelope.final_event_hash,
            "submitted_hash": envelope.submitted_hash,
        },
        "state": envelope.state,
        "created_at": rfc3339(envelope.created_at),
        "updated_at": rfc3339(envelope.updated_at),
        "closed_at": rfc3339(envelope.closed_at),
    }
    if envelope.review_decision:
        body["review"] = {
            "decision": envelope.review_decision,
            "reviewer_id": envelope.reviewer_id,
            "reviewer_kind": envelope.reviewer_kind,
            "notes": envelope.review_notes,
            "reviewed_at": rfc3339(envelope.reviewed_at),
        }
    return body


# --- schema description (rendering always goes through envelope_representation) -----------
