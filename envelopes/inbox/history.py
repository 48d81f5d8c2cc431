"""A request's history: its versions (answers to change requests) as one thread, and what
changed from the previous version to this one."""

import json
from dataclasses import dataclass
from datetime import datetime

from envelopes.inbox.cards import request_url
from envelopes.inbox.labels import STATUS_LABELS, TYPE_LABELS
from envelopes.models import ApprovalRequest


@dataclass
class ThreadItem:
    id: str
    url: str
    title: str
    type: str
    status: str
    created_at: datetime
    current: bool
    depth: int


def thread_of(approval: ApprovalRequest, limit: int = 50) -> list[ThreadItem]:
    """The request's history as one thread: its first version, every later version (answers to
    change requests), in order."""
    root, seen = approval, {approval.pk}
    while root.parent_id and root.parent_id not in seen and len(seen) < limit:
        seen.add(root.parent_id)
        root = ApprovalRequest.objects.select_related("envelope").get(pk=root.parent_id)
    items, level, depth = [], [root], 0
    while level and len(items) < limit:
        items.extend(
            ThreadItem(
                str(r.pk),
                request_url(r.pk),
                r.title,
                TYPE_LABELS.get(r.type, r.type),
                STATUS_LABELS.get(r.status, r.status),
                r.envelope.created_at,
                r.pk == approval.pk,
                depth,
            )
            for r in level
        )
        level = list(
            ApprovalRequest.objects.filter(parent__in=level)
            .exclude(pk__in=[i.id for i in items])
            .select_related("envelope")
            .order_by("envelope__created_at")
        )
        depth += 1
    return items


def _flatten(value, prefix="") -> dict[str, str]:
    if isinstance(value, dict) and value:
        flat = {}
        for key, item in value.items():
            flat.update(_flatten(item, f"{prefix}.{key}" if prefix else str(key)))
        return flat
    if isinstance(value, list) and value:
        flat = {}
        for index, item in enumerate(value):
            flat.update(_flatten(item, f"{prefix}[{index}]"))
        return flat
    return {prefix or "(value)": value if isinstance(value, str) else json.dumps(value)}


def changes_since(parent: ApprovalRequest, approval: ApprovalRequest, limit: int = 40) -> list[dict]:
    """What changed from the previous version of the card to this one."""
    before = {"title": parent.title, "summary": parent.summary, "risk level": parent.risk_level, "type": parent.type}
    after = {
        "title": approval.title,
        "summary": approval.summary,
        "risk level": approval.risk_level,
        "type": approval.type,
    }
    before.update({f"payload.{k}": v for k, v in _flatten(parent.payload).items()})
    after.update({f"payload.{k}": v for k, v in _flatten(approval.payload).items()})
    rows = []
    for key in list(dict.fromkeys([*before, *after])):
        if before.get(key) != after.get(key):
            rows.append({"field": key, "before": before.get(key), "after": after.get(key)})
    return rows[:limit]
