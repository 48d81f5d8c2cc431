"""The envelope state machine, enforced in one place."""

from envelopes.choices import STATE_TRANSITIONS, EnvelopeState


class IllegalTransition(Exception):
    pass


def check_transition(current: str, target: str) -> str:
    if target not in STATE_TRANSITIONS[EnvelopeState(current)]:
        if current == EnvelopeState.CLOSED:
            raise IllegalTransition("envelope is closed; closed envelopes are immutable")
        raise IllegalTransition(f"cannot move an envelope from {current} to {target}")
    return target


class StateWalk:
    """Steps an envelope through its states in memory, checking each move."""

    def __init__(self, state: str):
        self.state = state

    def to(self, target: str) -> str:
        self.state = check_transition(self.state, target)
        return self.state
