"""An agent request's approval rule as a value: how many people, in what order, decide.

- ``single``: the first eligible approval or rejection decides.
- ``sequential``: steps complete in order; only people named by the current step may act;
  the last step's approval approves; any rejection rejects.
- ``n_of_x``: ``required`` distinct approvals approve. A rejection is recorded; the request
  is rejected once the approvals still possible can no longer reach ``required``.

Approver entries are stored normalized: ``{"user": id}``, ``{"team": id}`` or
``{"role": name}`` (the submission resolves what the agent sent).
"""

from collections.abc import Sequence
from dataclasses import dataclass

SINGLE, SEQUENTIAL, N_OF_X = "single", "sequential", "n_of_x"
APPROVED, REJECTED = "approved", "rejected"


@dataclass(frozen=True)
class ApprovalRule:
    type: str = SINGLE
    steps: tuple[tuple[dict, ...], ...] = ()
    approvers: tuple[dict, ...] = ()
    required: int = 1

    @classmethod
    def parse(cls, stored: dict | None) -> "ApprovalRule":
        """The rule from its stored (normalized) form; an empty one is ``single``."""
        stored = stored or {}
        kind = stored.get("type") or SINGLE
        if kind == SEQUENTIAL:
            return cls(SEQUENTIAL, steps=tuple(tuple(step) for step in stored.get("steps") or ()))
        if kind == N_OF_X:
            return cls(N_OF_X, approvers=tuple(stored.get("approvers") or ()), required=int(stored.get("required", 1)))
        return cls(SINGLE)

    def as_dict(self) -> dict:
        if self.type == SEQUENTIAL:
            return {"type": SEQUENTIAL, "steps": [list(step) for step in self.steps]}
        if self.type == N_OF_X:
            return {"type": N_OF_X, "required": self.required, "approvers": list(self.approvers)}
        return {"type": SINGLE}

    @property
    def names_deciders(self) -> bool:
        """Does the rule itself say who decides (otherwise the route does)?"""
        return self.type in (SEQUENTIAL, N_OF_X)

    def step(self, approvals: int) -> int:
        """The current step (0-based) of a sequential rule after ``approvals`` approvals."""
        return approvals if self.type == SEQUENTIAL else 0

    def eligible_entries(self, approvals: int) -> tuple[dict, ...]:
        """The approver entries who may act now (empty: the route decides)."""
        if self.type == N_OF_X:
            return self.approvers
        if self.type == SEQUENTIAL and self.steps:
            return self.steps[min(approvals, len(self.steps) - 1)]
        return ()

    def every_entry(self) -> list[dict]:
        """Every entry the rule names, in order (for showing names)."""
        return [*self.approvers, *(entry for step in self.steps for entry in step)]

    def outcome(self, votes: Sequence[bool], approvals_still_possible=None) -> str | None:
        """``approved``, ``rejected`` or None (still open) after ``votes`` (True: approve)
        in order. ``approvals_still_possible()`` says, for n_of_x after a rejection, whether
        the people who have not voted can still make up ``required``."""
        approvals = sum(1 for vote in votes if vote)
        if votes and not votes[-1]:
            if self.type == N_OF_X and approvals_still_possible is not None and approvals_still_possible():
                return None
            return REJECTED
        if self.type == SINGLE:
            return APPROVED if approvals else None
        if self.type == SEQUENTIAL:
            return APPROVED if approvals >= len(self.steps) else None
        return APPROVED if approvals >= self.required else None

    def progress(self, votes: Sequence[bool]) -> str:
        """The rule's progress in a few words ("2 of 3 approvals", "step 2 of 3")."""
        approvals = sum(1 for vote in votes if vote)
        if self.type == N_OF_X:
            rejections = len(votes) - approvals
            text = f"{approvals} of {self.required} approvals"
            return f"{text} · {rejections} rejected" if rejections else text
        if self.type == SEQUENTIAL:
            return f"step {min(approvals + 1, len(self.steps))} of {len(self.steps)}"
        return ""
