"""An envelope laid out for its page: any JSON value as a tree the templates render readably,
the MIDAS sections of an evaluation as labelled rows, the audit chain as rows."""

import json
from typing import TYPE_CHECKING

from envelopes.inbox.labels import KIND_LABELS
from envelopes.representation import submitted_raw
from evidence.performers import PerformerNames

if TYPE_CHECKING:  # cards builds a held action's plan with ``tree``, from here
    from envelopes.inbox.cards import Fact

# Nesting the page lays out as a tree; deeper values are shown as their JSON text (input is
# refused past 32 levels at the edge, docs/input.md, but older envelopes may be deeper).
MAX_TREE_DEPTH = 32


def tree(value, depth: int = 0):
    """A JSON value as nested nodes the templates can render readably."""
    if isinstance(value, dict | list) and depth >= MAX_TREE_DEPTH:
        return {"kind": "scalar", "text": json.dumps(value, ensure_ascii=False)}
    if isinstance(value, dict):
        return {"kind": "map", "items": [(str(key), tree(item, depth + 1)) for key, item in value.items()]}
    if isinstance(value, list):
        return {"kind": "list", "items": [tree(item, depth + 1) for item in value]}
    if value is None:
        return {"kind": "empty", "text": "null"}
    if isinstance(value, bool):
        return {"kind": "scalar", "text": "true" if value else "false"}
    return {"kind": "scalar", "text": str(value)}


def _structure_name(item) -> str:
    if not item:
        return ""
    return f"{item['name']} ({item.get('id')})" if item.get("name") else str(item.get("id"))


def sections_of(envelope, facts: "list[Fact]") -> list[dict]:
    """The five MIDAS sections (and the review), as labelled rows."""
    structure = envelope.structure or {}
    explanation = envelope.explanation or {}
    raw = submitted_raw(envelope.submitted_raw)

    def row(label, value="", *, code=False, time=None, node=None):
        return {"label": label, "value": value, "code": code, "time": time, "node": node}

    evaluation_rows = [
        row("Outcome", envelope.outcome or "—"),
        row("Reason", f"{envelope.reason_code} — {(envelope.response or {}).get('explanation', '')}".strip(" —")),
        row("Evaluated", time=envelope.evaluated_at),
        *(row(f.label, f"{f.value} ({f.detail})" if f.detail else f.value) for f in facts),
    ]
    if explanation.get("missing_context_keys"):
        evaluation_rows.append(row("Missing context", ", ".join(explanation["missing_context_keys"])))
    if explanation.get("policy_error"):
        evaluation_rows.append(row("Policy error", explanation["policy_error"]))

    sections = [
        {
            "id": "identity",
            "title": "Identity",
            "rows": [
                row("Envelope", str(envelope.id), code=True),
                row("Request source", envelope.request_source, code=True),
                row("Request ID", envelope.request_id, code=True),
                row("Kind", KIND_LABELS.get(envelope.kind, envelope.kind)),
                row("Schema version", envelope.schema_version),
            ],
        },
        {
            "id": "submitted",
            "title": "Submitted",
            "rows": [row("Received", time=envelope.received_at), row("Request", node=tree(raw))],
            "raw": envelope.submitted_raw,
            "raw_label": "The request exactly as received",
        },
        {
            "id": "resolved",
            "title": "Resolved authority",
            "rows": [
                row(
                    "Surface",
                    f"{envelope.surface_id} v{envelope.surface_version}"
                    if envelope.surface_version
                    else envelope.surface_id,
                    code=True,
                ),
                row(
                    "Profile",
                    f"{envelope.profile_id} v{envelope.profile_version}" if envelope.profile_id else "—",
                    code=bool(envelope.profile_id),
                ),
                row("Agent", envelope.agent_id or "—", code=bool(envelope.agent_id)),
                row("Grant", envelope.grant_id or "—", code=bool(envelope.grant_id)),
                row("Process", _structure_name(structure.get("process")) or "—"),
                row("Business service", _structure_name(structure.get("business_service")) or "—"),
                row(
                    "Capabilities",
                    ", ".join(_structure_name(c) for c in structure.get("capabilities") or []) or "—",
                ),
            ],
        },
        {"id": "evaluation", "title": "Evaluation", "rows": evaluation_rows},
        {
            "id": "integrity",
            "title": "Integrity",
            "rows": [
                row("Audit events", str(len(envelope.audit_event_ids or []))),
                row("First event hash", envelope.first_event_hash, code=True),
                row("Final event hash", envelope.final_event_hash, code=True),
                row("Submitted hash", envelope.submitted_hash, code=True),
            ],
        },
    ]
    if envelope.review_decision:
        sections.append(
            {
                "id": "review",
                "title": "Review",
                "rows": [
                    row("Decision", envelope.review_decision),
                    row("Reviewer", f"{envelope.reviewer_id} ({envelope.reviewer_kind or 'user'})"),
                    row("Reviewed", time=envelope.reviewed_at),
                    row("Notes", envelope.review_notes or "—"),
                ],
            }
        )
    return sections


def chain_rows(events, organization_id) -> list[dict]:
    """The audit chain as rows; performers by name (``evidence.performers``), as recorded in the title."""
    performers = PerformerNames.of(organization_id, [(e.performer_type, e.performer_id) for e in events])
    return [
        {
            "sequence_no": event.sequence_no,
            "event_type": event.event_type,
            "performer": performers.label(event.performer_type, event.performer_id),
            "performer_id": f"{event.performer_type} · {event.performer_id}",
            "occurred_at": event.occurred_at,
            "hash": event.hash,
            "payload": json.dumps(event.payload, indent=2, sort_keys=True),
        }
        for event in events
    ]
