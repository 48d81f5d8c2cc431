"""An approval rule's progress: in a few words for a card ("1 of 2 approvals", "step 2 of 3"),
and in full for the request page (the steps, who may approve, every vote)."""

from dataclasses import dataclass, field
from datetime import datetime

from envelopes.approval_rules import N_OF_X, SEQUENTIAL, ApprovalRule
from envelopes.choices import MANAGER_LEVEL, RequestStatus, RequestType
from envelopes.inbox.labels import Names
from envelopes.models import ApprovalRequest


def _votes(approval: ApprovalRequest) -> list:
    return list(approval.approvals.all())  # prefetched on the inbox's cards


def progress_line(approval: ApprovalRequest) -> str:
    """The approval rule's progress in a few words, for a card."""
    if approval.is_fyi:
        return ""
    if approval.escalation_level:
        return "re-routed after timeout"
    return ApprovalRule.parse(approval.approval_rule).progress([v.approve for v in _votes(approval)])


@dataclass
class Vote:
    person: str
    approve: bool
    step: int
    comment: str
    at: datetime
    verb: str = ""  # what the person did, in words: approved, rejected, chose, answered, acknowledged


def _verb(approval: ApprovalRequest, approve: bool) -> str:
    """Choosing, answering and acknowledging are recorded as the decider's approval."""
    if approval.is_fyi:
        return "acknowledged"
    if approval.type == RequestType.CHOICE:
        return "made the choice"
    if approval.type == RequestType.INPUT_REQUEST:
        return "answered"
    return "approved" if approve else "rejected"


@dataclass
class Step:
    number: int
    who: str
    state: str  # done | current | waiting


@dataclass
class Progress:
    rule: str  # single | sequential | n_of_x
    headline: str  # "1 of 2 approvals", "step 2 of 3", "one approval decides"
    approvals: int = 0
    required: int = 0
    steps: list[Step] = field(default_factory=list)
    approvers: str = ""  # n_of_x: who may approve, in words
    votes: list[Vote] = field(default_factory=list)
    note: str = ""


def progress_of(approval: ApprovalRequest, votes: list, names: Names) -> Progress:
    rule = ApprovalRule.parse(approval.approval_rule)
    approvals = sum(1 for v in votes if v.approve)
    vote_rows = [
        Vote(names.person(v.person_id), v.approve, v.step, v.comment, v.at, _verb(approval, v.approve)) for v in votes
    ]
    if approval.is_fyi:
        return Progress("fyi", "one acknowledgement closes it", votes=vote_rows)
    if rule.type == N_OF_X:
        progress = Progress(
            rule.type,
            f"{approvals} of {rule.required} approvals",
            approvals=approvals,
            required=rule.required,
            approvers=", ".join(names.entry(e) for e in rule.approvers),
            votes=vote_rows,
            note="Distinct approvers; a rejection ends it only when the approvals still possible cannot reach "
            f"{rule.required}.",
        )
    elif rule.type == SEQUENTIAL:
        steps = rule.steps
        current = min(approvals, len(steps) - 1) if steps else 0
        final = approval.status == RequestStatus.APPROVED
        progress = Progress(
            rule.type,
            rule.progress([v.approve for v in votes]) if not final else f"all {len(steps)} steps approved",
            approvals=approvals,
            required=len(steps),
            steps=[
                Step(
                    index + 1,
                    " or ".join(names.entry(e) for e in step),
                    "done" if index < approvals or final else ("current" if index == current else "waiting"),
                )
                for index, step in enumerate(steps)
            ],
            votes=vote_rows,
            note="Steps complete in order; any rejection rejects.",
        )
    else:
        progress = Progress("single", "one approval or rejection decides", votes=vote_rows)
    if approval.escalation_level:
        who = (
            "the owner's manager"
            if approval.escalation_level == MANAGER_LEVEL and approval.channel.owner.manager_id
            else "any platform admin"
        )
        progress.note = f"Re-routed after its timeout: {who} decides alone now."
    return progress
