"""Held actions for tests, made as the gate makes them (docs/gate.md): an Envelope of kind
``action`` waiting for a person, its ``GateApproval`` with the stored plan (the plan's
``to_dict`` form) and its opening events in the ledger, announced to live inboxes after the
commit."""

import hashlib
import json
import uuid
from datetime import timedelta

from django.db import transaction
from django.utils import timezone

from envelopes.choices import EnvelopeKind, EnvelopeState
from envelopes.models import Envelope, GateApproval
from envelopes.services.decide import announce_on_commit
from envelopes.state import StateWalk
from evidence.canonical import canonical_hash
from evidence.services.chain import EventDraft, append_events


def _hex_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


def http_plan(action_id="http_delete", version="1.0.0", method="DELETE", domains=("api.example.com",), **extra):
    return {
        "action_id": action_id,
        "version": version,
        "provider_module_digest": "builtin:http_api",
        "template": {
            "method": method,
            "url_template": "https://{{host}}/v1/items/{{item_id}}",
            "headers": {"Authorization": "Bearer {{secret:ITEMS_TOKEN}}"},
            "body_template": None,
        },
        "egress": {"profile": "proxy_allowlist", "allowed_domains": list(domains), "allowed_methods": [method]},
        "fs": {"allowed_operations": [], "allowed_paths": [], "denied_paths": [], "max_file_bytes": 10485760},
        "resource_limits": {"fuel": 1000000, "memory_mb": 64, "timeout_seconds": 10, "max_io_calls": 10},
        "io": {"max_request_bytes": 65536, "max_response_bytes": 1048576},
        "secrets": [{"name": "ITEMS_TOKEN", "required": True}],
        "verifier_kind": "http_status",
        "verification_config": {"expected_status": [200, 204]},
        "declared_side_effects": ["http_delete"],
        "required_imports": [],
        **extra,
    }


def fs_plan(action_id="fs_write", version="1.0.0", allowed_paths=("notes/**",), denied_paths=(".env",)):
    return {
        "action_id": action_id,
        "version": version,
        "provider_module_digest": "builtin:fs",
        "template": None,
        "egress": {"profile": "none", "allowed_domains": [], "allowed_methods": []},
        "fs": {
            "allowed_operations": ["read", "write"],
            "allowed_paths": list(allowed_paths),
            "denied_paths": list(denied_paths),
            "max_file_bytes": 1048576,
        },
        "resource_limits": {"fuel": 1000000, "memory_mb": 64, "timeout_seconds": 5, "max_io_calls": 10},
        "io": {"max_request_bytes": 65536, "max_response_bytes": 1048576},
        "secrets": [],
        "verifier_kind": "fs_hash",
        "verification_config": None,
        "declared_side_effects": ["fs_write"],
        "required_imports": [],
    }


@transaction.atomic
def hold_action(
    organization,
    *,
    plan=None,
    body=None,
    risk_level="high",
    agent_id="agent-ops",
    hold_reason="unresolved_domain",
    expires_in=timedelta(minutes=30),
    budget=None,
    created_at=None,
) -> Envelope:
    """A held action waiting in ``organization``'s inbox; the envelope (``.gate_approval`` is its row)."""
    plan = plan or http_plan()
    body = {"host": "api.newvendor.io", "item_id": "inv-42"} if body is None else body
    now = created_at or timezone.now()
    envelope_id = uuid.uuid4()
    approval_id, trace_id, session_id = _hex_id("apr"), _hex_id("trc"), _hex_id("ses")
    plan_hash = "sha256:" + hashlib.sha256(json.dumps(plan, sort_keys=True).encode()).hexdigest()
    request_hash = "sha256:" + canonical_hash(body)
    walk = StateWalk(EnvelopeState.RECEIVED)
    events = [
        EventDraft(
            "ENVELOPE_CREATED",
            {"state": walk.state, "approval_id": approval_id, "action_id": plan["action_id"], "trace_id": trace_id},
            "agent",
            agent_id,
            now,
        ),
        EventDraft(
            "ESCALATION_PENDING",
            {
                "state": walk.to(EnvelopeState.AWAITING_REVIEW),
                "hold_reason": hold_reason,
                "plan_hash": plan_hash,
                "request_hash": request_hash,
            },
            occurred_at=now,
        ),
    ]
    stored = append_events(str(envelope_id), events, new_chain=True)
    raw = json.dumps(body)
    envelope = Envelope.objects.create(
        id=envelope_id,
        organization=organization,
        kind=EnvelopeKind.ACTION,
        state=walk.state,
        request_source=f"gate:{session_id}",
        request_id=trace_id,
        submitted_raw=raw,
        submitted_hash=canonical_hash(body),
        received_at=now,
        agent_id=agent_id,
        created_at=now,
        updated_at=now,
        audit_event_ids=[str(e.id) for e in stored],
        first_event_hash=stored[0].hash,
        final_event_hash=stored[-1].hash,
    )
    GateApproval.objects.create(
        envelope=envelope,
        approval_id=approval_id,
        trace_id=trace_id,
        action_id=plan["action_id"],
        action_version=plan["version"],
        risk_level=risk_level,
        agent_id=agent_id,
        session_id=session_id,
        lease_jti=_hex_id("lea"),
        hold_reason=hold_reason,
        plan=plan,
        plan_hash=plan_hash,
        request_body=body,
        request_hash=request_hash,
        policy_version="7",
        budget_snapshot={"max_calls": 20, "calls_used": 3} if budget is None else budget,
        expires_at=now + expires_in,
        created_at=now,
    )
    announce_on_commit(organization.pk, [envelope.pk])
    return Envelope.objects.select_related("gate_approval").get(pk=envelope.pk)
