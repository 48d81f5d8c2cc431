"""``POST /api/entitlement/consume`` on the hot path (``governance.hotpath``): entitlements'
declaration.

The hot path admits a person's plain request (``Authorization: Bearer mdt_…``; OIDC callers
go to Django) and the body is read with the view's rules (exactly ``{"run_id"}``, the run_id
by ``run_id_value``); anything else is Django's. The consume is one item of the group commit
(``consume_many``), whose statement re-checks the token; only a 200 is answered here: an
item refused (402, 409) wrote nothing and is handed to ``ConsumeView``, which answers it.
``MANDATE_GBX_CONSUME_FAST_ROUTE=false`` turns it off.
"""

from django.conf import settings

from entitlements.api.views import ConsumeView
from entitlements.services.consumption import Consumption, consume_many
from entitlements.services.holders import Holder, principal_value, run_id_value
from governance import hotpath
from governance.hotpath import HandOver, HotEndpoint, Write, strict_json
from governance.token_cache import CachedToken, StaleToken


def parse(body: bytes) -> str:
    """The run_id of a body ``{"run_id": …}``; HandOver (Django's 400) for anything else."""
    data, _text = strict_json(body)
    if not isinstance(data, dict) or data.keys() != {"run_id"}:
        raise HandOver
    return run_id_value(data["run_id"])


def consumption(caller: CachedToken, run_id: str):
    """One consume as hot path steps: the write, then ``ConsumeView``'s 200 body."""
    holder = Holder(str(caller.organization.pk), principal_value(caller.principal_name), "person")
    result = yield Write(Consumption(holder, run_id, caller.check, caller.principal_name))
    if result["status"] == "unauthenticated":
        raise StaleToken
    if result["status"] != "consumed":
        raise HandOver  # 402 or 409: nothing was written; the view answers it
    return {"entitlement_id": result["entitlement_id"], "run_id": run_id, "runs_remaining": result["runs_remaining"]}


CONSUME = HotEndpoint(
    path="/api/entitlement/consume",
    method="POST",
    view=ConsumeView,
    parse=parse,
    service=consumption,
    record=consume_many,
    max_batch=settings.MANDATE_GBX_CONSUME_GROUP_COMMIT,
    enabled=settings.MANDATE_GBX_CONSUME_FAST_ROUTE,
)


def answer(secret: str, body: bytes) -> bytes | None:
    """One consume through the hot path's code, synchronously (tests, the benchmark)."""
    return hotpath.answer(CONSUME, secret, body)
