"""Deciding from the inbox: the one module of the inbox that calls the services deciding an
envelope (``envelopes.requests.decisions`` for agents' requests, ``envelopes.evaluation.reviews``
for escalations). When the core's one decision path lands, only this module is rewired to it.

Those services still answer ``APIError``; here each becomes the domain error it means
(``governance.errors``), which is what the inbox's pages catch.
"""

from envelopes.evaluation.reviews import REVIEW_ROLES, review_envelope
from envelopes.requests.decisions import (
    ADMIN_LEVEL,
    MANAGER_LEVEL,
    Refusal,
    act,
    eligible_filter,
    next_escalation_level,
    refusal,
)
from governance.api.errors import APIError
from governance.errors import Conflict, DomainError, Invalid, NotFound, Refused

__all__ = [
    "ADMIN_LEVEL",
    "MANAGER_LEVEL",
    "REVIEW_ROLES",
    "Refusal",
    "decide_request",
    "eligible_filter",
    "next_escalation_level",
    "refusal",
    "review_escalation",
]

# What each status of the services' answers means in the domain's words.
DOMAIN_ERRORS = {400: Invalid, 403: Refused, 404: NotFound, 409: Conflict}


def _domain_error(exc: APIError) -> DomainError:
    return DOMAIN_ERRORS.get(exc.status_code, Invalid)(str(exc.error))


def decide_request(
    organization_id, request_id, person, action: str, *, comment: str = "", choice=None, input_text: str = ""
):
    """One person's action on an agent's request (approve, reject, acknowledge, choose, answer,
    request_changes, withdraw_tweak); the request, or a DomainError saying why not."""
    try:
        return act(organization_id, request_id, person, action, comment=comment, choice=choice, input_text=input_text)
    except APIError as exc:
        raise _domain_error(exc) from exc


def review_escalation(organization, envelope_id, decision: str, person, notes: str = ""):
    """Approve or reject an escalated evaluation; the closed envelope, or a DomainError
    (``Conflict`` when it no longer waits)."""
    try:
        return review_envelope(organization, envelope_id, decision, person, notes)
    except APIError as exc:
        raise _domain_error(exc) from exc
