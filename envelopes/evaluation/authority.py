"""Judging an evaluation request against the organization's declared authority (MIDAS's
evaluation order): agent, surface, grant and profile, structure, confidence, consequence,
then the profile's policy. Pure: it reads the in-memory authority snapshot and appends the
audit event drafts of each step; ``engine`` records the result."""

from dataclasses import dataclass, field
from decimal import Decimal

from controlplane.choices import RISK_RATING_RANK
from controlplane.services.policies import PolicyError
from controlplane.services.policies import evaluate as evaluate_policy
from envelopes.choices import Outcome, ReasonCode
from envelopes.evaluation.snapshot import AuthoritySnapshot
from evidence.services.chain import EventDraft

BLOCKED_AGENT_STATES = frozenset({"suspended", "revoked"})

EXPLANATIONS = {
    ReasonCode.WITHIN_AUTHORITY: "The request is within the agent's delegated authority.",
    ReasonCode.CONFIDENCE_BELOW_THRESHOLD: "Confidence {confidence} is below the profile's threshold {threshold}.",
    ReasonCode.CONSEQUENCE_EXCEEDS_LIMIT: "The consequence exceeds the profile's limit.",
    ReasonCode.POLICY_DENY: "Policy {policy} denied the request.",
    ReasonCode.POLICY_ERROR: "Policy {policy} could not be evaluated and the profile fails closed.",
    ReasonCode.AGENT_NOT_FOUND: "Agent {agent} is not declared.",
    ReasonCode.AGENT_OPERATIONAL_STATE_BLOCKED: "Agent {agent} is {state}.",
    ReasonCode.SURFACE_NOT_FOUND: "Surface {surface} is not declared.",
    ReasonCode.SURFACE_INACTIVE: "Surface {surface} has no version active now.",
    ReasonCode.NO_ACTIVE_GRANT: "Agent {agent} has no active grant.",
    ReasonCode.PROFILE_NOT_FOUND: "No active profile backs the agent's grants.",
    ReasonCode.GRANT_PROFILE_SURFACE_MISMATCH: "None of the agent's active profiles covers surface {surface}.",
    ReasonCode.INSUFFICIENT_CONTEXT: "Required context is missing: {missing}.",
}


@dataclass
class Decision:
    outcome: str = ""
    reason: str = ""
    explanation_text: str = ""
    explanation: dict = field(default_factory=dict)
    surface_version: int | None = None
    profile_key: str = ""
    profile_version: int | None = None
    grant_key: str = ""
    structure: dict = field(default_factory=dict)
    policy_reference: str = ""
    policy_evaluated: bool = False


def _consequence_exceeds(provided: dict | None, limit: dict | None) -> bool:
    if not provided or not limit:
        return False
    if provided.get("type") != limit.get("type"):
        return True
    if limit["type"] == "monetary":
        if not provided.get("currency") or provided["currency"] != limit.get("currency"):
            return True
        return Decimal(str(provided.get("amount", 0))) > Decimal(str(limit.get("amount") or 0))
    provided_rank = RISK_RATING_RANK.get(provided.get("risk_rating"), len(RISK_RATING_RANK))
    return provided_rank > RISK_RATING_RANK.get(limit.get("risk_rating"), -1)


def _policy_input(request, snapshot, surface, profile) -> dict:
    agent = snapshot.agents[request.agent_id]
    return {
        "agent": {"id": agent.key, "type": agent.type, "owner": agent.owner, "model_version": agent.model_version},
        "surface": {"id": surface.key, "version": surface.version, "risk_tier": surface.risk_tier},
        "profile": {
            "id": profile.key,
            "version": profile.version,
            "consequence_threshold": profile.consequence_threshold,
        },
        "consequence": request.consequence,
        "context": request.context,
        "confidence": request.confidence,
    }


def decide(request, snapshot: AuthoritySnapshot, now, events: list[EventDraft]) -> Decision:
    """Steps 2-10 of the evaluation order for an ``engine.EvaluationRequest``; appends an event
    per step to ``events``."""
    decision = Decision()

    def finish(outcome, reason, **detail):
        decision.outcome, decision.reason = outcome, reason
        decision.explanation_text = EXPLANATIONS[reason].format(**detail) if detail else EXPLANATIONS[reason]
        return decision

    surface = snapshot.active_surface(request.surface_id, now)
    if surface is None:
        reason = (
            ReasonCode.SURFACE_INACTIVE if request.surface_id in snapshot.surfaces else ReasonCode.SURFACE_NOT_FOUND
        )
        return finish(Outcome.REJECT, reason, surface=request.surface_id)
    decision.surface_version = surface.version
    events.append(EventDraft("SURFACE_RESOLVED", {"surface_id": surface.key, "surface_version": surface.version}))
    decision.structure = snapshot.structure(surface.process_key)

    agent = snapshot.agents.get(request.agent_id)
    if agent is None:
        return finish(Outcome.REJECT, ReasonCode.AGENT_NOT_FOUND, agent=request.agent_id)
    if agent.operational_state in BLOCKED_AGENT_STATES:
        return finish(
            Outcome.REJECT, ReasonCode.AGENT_OPERATIONAL_STATE_BLOCKED, agent=agent.key, state=agent.operational_state
        )
    events.append(EventDraft("AGENT_RESOLVED", {"agent_id": agent.key, "operational_state": agent.operational_state}))

    grants = [g for g in snapshot.grants_by_agent.get(agent.key, ()) if g.active_at(now)]
    if not grants:
        return finish(Outcome.REJECT, ReasonCode.NO_ACTIVE_GRANT, agent=agent.key)
    backed = [(g, snapshot.active_profile(g.profile_key, now)) for g in grants]
    backed = [(g, p) for g, p in backed if p is not None]
    match = next(((g, p) for g, p in backed if p.surface_key == surface.key), None)
    if match is None:
        if backed:
            return finish(Outcome.REJECT, ReasonCode.GRANT_PROFILE_SURFACE_MISMATCH, surface=surface.key)
        return finish(Outcome.REJECT, ReasonCode.PROFILE_NOT_FOUND)
    grant, profile = match
    decision.grant_key, decision.profile_key, decision.profile_version = grant.key, profile.key, profile.version
    decision.policy_reference = profile.policy_reference
    events.append(
        EventDraft(
            "AUTHORITY_CHAIN_RESOLVED",
            {
                "grant_id": grant.key,
                "profile_id": profile.key,
                "profile_version": profile.version,
                "agent_id": agent.key,
            },
        )
    )
    decision.explanation = {
        "confidence_provided": request.confidence,
        "confidence_threshold": profile.confidence_threshold,
        "consequence_provided": request.consequence,
        "consequence_threshold": profile.consequence_threshold,
        "policy_evaluated": False,
        "policy_reference": profile.policy_reference,
    }

    required = list(dict.fromkeys([*profile.required_context_keys, *surface.required_fields]))
    provided = sorted(request.context)
    missing = [key for key in required if key not in request.context]
    events.append(
        EventDraft("CONTEXT_VALIDATED", {"required_keys": required, "provided_keys": provided, "passed": not missing})
    )
    if missing:
        decision.explanation["missing_context_keys"] = missing
        return finish(Outcome.REQUEST_CLARIFICATION, ReasonCode.INSUFFICIENT_CONTEXT, missing=", ".join(missing))

    confident = request.confidence >= profile.confidence_threshold
    events.append(
        EventDraft(
            "CONFIDENCE_CHECKED",
            {
                "confidence_provided": request.confidence,
                "confidence_threshold": profile.confidence_threshold,
                "passed": confident,
            },
        )
    )
    if not confident:
        return finish(
            Outcome.ESCALATE,
            ReasonCode.CONFIDENCE_BELOW_THRESHOLD,
            confidence=request.confidence,
            threshold=profile.confidence_threshold,
        )

    exceeds = _consequence_exceeds(request.consequence, profile.consequence_threshold)
    events.append(
        EventDraft(
            "CONSEQUENCE_CHECKED",
            {
                "consequence_provided": request.consequence,
                "consequence_threshold": profile.consequence_threshold,
                "passed": not exceeds,
            },
        )
    )
    if exceeds:
        return finish(Outcome.ESCALATE, ReasonCode.CONSEQUENCE_EXCEEDS_LIMIT)

    if profile.policy_reference:
        decision.policy_evaluated = True
        decision.explanation["policy_evaluated"] = True
        policy = snapshot.policy(profile.policy_reference)
        result, error = "error", ""
        if policy is None:
            error = f"policy {profile.policy_reference!r} is not declared"
        else:
            try:
                verdict = evaluate_policy(
                    policy.package, policy.source, "allow", _policy_input(request, snapshot, surface, profile)
                )
                result = "allow" if verdict.allow else "deny"
            except PolicyError as exc:
                error = str(exc)
        payload = {"policy_reference": profile.policy_reference, "result": result, "fail_mode": profile.fail_mode}
        if error:
            payload["error"] = error
            decision.explanation["policy_error"] = error
        events.append(EventDraft("POLICY_EVALUATED", payload))
        if result == "deny":
            return finish(Outcome.ESCALATE, ReasonCode.POLICY_DENY, policy=profile.policy_reference)
        if result == "error" and profile.fail_mode != "open":
            return finish(Outcome.ESCALATE, ReasonCode.POLICY_ERROR, policy=profile.policy_reference)

    return finish(Outcome.ACCEPT, ReasonCode.WITHIN_AUTHORITY)
