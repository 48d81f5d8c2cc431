"""``POST /v1/actions/{action_id}/execute``: the gate's pipeline, as named steps, in order.

    1. rate_limit        429 rate_limit_exceeded
    2. drain             503 draining                               (no ledger event)
    3. authenticate      401 missing_auth_header | invalid_lease | lease_expired | invalid_dpop | replay_detected
    4. look_up           404 action_not_found
    5. trust             403 action_not_registered | action_digest_mismatch
    6. read_body         413 | 400 invalid_request | 422 schema_violation; request_hash
    7. resolve_targets   which domains / paths the call reaches, and whether each is known
    8. budget_snapshot   403 budget_session_not_found
    9. policy            403 policy_denied (deny_reason) | hold | allow
   10. hold              202 pending_approval (a held action: an Envelope in the inbox)
   11. debit             403 budget_exhausted (given back if nothing is dispatched)
   12. grant             the execution grant, signed, stamped with the revocation epoch
   13. dispatch          502 action_execution_failed
   14. check_response    the response schema
   15. verify            the verifier's outcome
   16. record            receipt, ledger event and execution row in one transaction
                         (500 evidence_persistence_failed otherwise) → 200

Every refusal from step 3 on writes a ledger event first (``GATE_ACTION_CALL``, decision
``deny``). The service is a generator of hot-path steps (``governance.hotpath``): the hot
path drives it on the event loop for plain requests, Django's view drives the same generator
synchronously for everything else, so both answer alike. Each step is a function in
``envelopes/gate/steps/``; this module only says their order, and where each runs on the hot
path: ``Cached`` steps read what this process keeps in memory (gate state, catalogue, learned
targets, policy snapshot, signing key) or nothing at all (the budget steps of a lease without
budgets) and run on the event loop unless they need the database; ``InThread`` steps block
(a held action's writes, the fs and WASM providers, the replay check in the embedded
default's table); ``OnLoop`` steps wait on the network without blocking (the replay check in
Redis, ``builtin:http_api``'s call); the evidence is a
``Write``, group-committed with other calls'.
"""

from envelopes.gate.steps import admission, dispatching, recording, request, targets
from envelopes.gate.steps.call import Call
from governance.hotpath import Cached, HotRequest, InThread


def execute(request_: HotRequest):
    """The whole pipeline for one request; returns ``(status, body)``."""
    admission.rate_limit()  # 1 and 2: no ledger event (the reference's drain writes none)
    yield Cached(admission.drain)
    call = Call.start(request_)
    try:
        call.lease = yield Cached(admission.authenticate, call)
        yield admission.remember(call)  # the proof, once: Redis on the loop, or a table in a thread
        call.manifest = yield Cached(admission.look_up, call)
        admission.trust(call)
        request.read_body(call)
        yield Cached(targets.resolve_targets, call)
        call.budget = yield Cached(dispatching.budget_snapshot, call)
        call.policy = yield Cached(dispatching.policy, call)
        if call.policy.result == "hold":
            return (yield InThread(dispatching.hold, call))
        yield Cached(dispatching.debit, call)
        try:
            yield Cached(dispatching.grant, call)
            call.result = yield dispatching.dispatching(call)  # on the loop, or in a thread
        except Exception:
            yield Cached(dispatching.give_back, call)
            raise
        dispatching.check_response(call)
        dispatching.verify(call)
        return (yield from recording.record(call))
    except Exception as failure:  # a refusal, or a bug: either way the ledger says so
        if not getattr(failure, "recorded", False):
            yield from recording.record_refusal(call, recording.as_refusal(failure))
        raise
