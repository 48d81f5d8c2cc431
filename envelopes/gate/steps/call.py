"""One execute call as it goes through the pipeline: what each step found, for the next."""

import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.utils import timezone

from governance.gate.ids import new_id
from governance.hotpath import HotRequest


@dataclass
class Call:
    request: HotRequest
    action_id: str
    trace_id: str
    started: float
    received_at: datetime
    lease: Any = None  # governance.gate.auth.LeaseContext
    manifest: Any = None  # controlplane.gate.manifests.Manifest
    body: Any = None
    request_hash: str = ""
    plan: Any = None  # envelopes.gate.plan.ExecutionPlan
    plan_hash: str = ""  # the plan's, once known (steps.targets.plan_for keeps it with the plan)
    domains: tuple = ()  # the hosts the call reaches
    paths: tuple = ()  # the fs paths it touches
    unresolved_domains: tuple = ()
    unresolved_paths: tuple = ()
    denied_paths: tuple = ()
    sensitive_path: bool = False
    budget: Any = None  # envelopes.gate.budgets.BudgetSnapshot | None
    policy: Any = None  # controlplane.gate.policy.PolicyDecision
    debited: bool = False
    grant_id: str = ""
    grant_signature: str = ""
    result: Any = None  # envelopes.gate.providers.ProviderResult
    verification: Any = None
    dispatched_at: datetime | None = None
    finished_at: datetime | None = None
    approval: Any = None  # the held action this call executes, when approved
    learned_domain: str = ""

    @classmethod
    def start(cls, request: HotRequest) -> "Call":
        return cls(
            request,
            request.params.get("action_id", ""),
            new_id("trc"),
            time.perf_counter(),
            timezone.now(),
        )

    def digest_of_plan(self) -> str:
        """``plan.plan_hash()``, computed once per call."""
        if not self.plan_hash:
            self.plan_hash = self.plan.plan_hash()
        return self.plan_hash

    @property
    def principal(self) -> str | None:
        return self.lease.agent_id if self.lease is not None else None

    @property
    def session_id(self) -> str | None:
        return self.lease.session_id if self.lease is not None else None
