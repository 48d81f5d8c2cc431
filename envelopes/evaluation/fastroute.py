"""``POST /v1/evaluate`` on the hot path (``governance.hotpath``): evaluation's declaration.

The hot path admits the request, authorizes the token with ``EvaluateView``'s roles and
parses the body with the view's own parser; the service below decides with
``evaluation_steps`` (the code ``evaluate()`` runs) on the event loop, loading the
authority snapshot in the thread pool when it is not cached, and records through the
group commit with ``mandate_record_evaluations``, whose token re-check makes a revoked
token fail on its next request. ``MANDATE_EVALUATE_FAST_ROUTE=false`` turns it off.
"""

from django.conf import settings

from envelopes.evaluation.api.evaluate import EvaluateView
from envelopes.evaluation.engine import LOAD, EvaluationRequest, evaluation_steps, record_many
from envelopes.evaluation.parse import parse_evaluation
from envelopes.evaluation.snapshot import authority_snapshot, peek_snapshot
from governance import hotpath
from governance.hotpath import HotEndpoint, InThread, Write, strict_json
from governance.token_cache import CachedToken


def parse(body: bytes) -> tuple[EvaluationRequest, str]:
    """The request and the text it is recorded with (``submitted_raw``)."""
    data, text = strict_json(body)
    return parse_evaluation(data), text


def evaluation(caller: CachedToken, parsed: tuple[EvaluationRequest, str]):
    """The evaluation as hot path steps; the cached snapshot is used unchecked (the
    recording statement checks its revision)."""
    request, raw = parsed
    organization_id = caller.organization.pk
    snapshot = peek_snapshot(organization_id)
    checked = snapshot is None
    if checked:
        snapshot = yield InThread(authority_snapshot, organization_id)
    steps = evaluation_steps(organization_id, request, raw, caller.subject_id, snapshot, checked)
    reply = None
    while True:
        try:
            step = steps.send(reply)
        except StopIteration as finished:
            return finished.value
        if step[0] == LOAD:
            reply = yield InThread(authority_snapshot, organization_id)
        else:
            reply = yield Write((step[1], step[2], caller.check))


EVALUATE = HotEndpoint(
    path="/v1/evaluate",
    method="POST",
    view=EvaluateView,
    parse=parse,
    service=evaluation,
    record=record_many,
    max_batch=settings.MANDATE_EVALUATE_GROUP_COMMIT,
    enabled=settings.MANDATE_EVALUATE_FAST_ROUTE,
)


def answer(secret: str, body: bytes) -> bytes | None:
    """One evaluation through the hot path's code, synchronously (the benchmark's breakdown)."""
    return hotpath.answer(EVALUATE, secret, body)
