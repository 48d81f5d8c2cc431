"""Registering channels and deprecating profiles at once, with evaluations and reads around
them, through a real server on PostgreSQL: every answer is the expected one, never a 500.

Issue 10 reported a rare `select_for_update cannot be used outside of a transaction` 500
from this mix (3 in ~1,600 requests). Its cause was elsewhere: a ledger walk that failed left
a generator suspended inside ``atomic()``, and the thread that later freed it ended its own
request's transaction (tests/test_transaction_integrity.py reproduces and guards that). This
test keeps the mix itself under watch."""

import asyncio
import random
import uuid

import httpx
import pytest

from envelopes.models import Channel
from envelopes.requests.channels import create_invite
from governance.choices import Role
from governance.services.tokens import issue_token
from tests.faults import database_url_named, server
from tests.test_evaluate import payment

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


def test_register_channel_and_deprecate_profile_at_once_never_500(demo, make_person):
    admin = make_person(roles=[Role.PLATFORM_ADMIN], username="ops")
    _, token = issue_token(admin, "mix", [Role.PLATFORM_ADMIN])
    invites = [create_invite(admin)[1] for _ in range(120)]
    headers = {"Authorization": f"Bearer {token}"}
    answers = []

    async def run(base_url):
        async with httpx.AsyncClient(base_url=base_url, timeout=30) as client:

            async def register(invite):
                response = await client.post("/api/register-channel", json={"invite_token": invite})
                answers.append(("register", response.status_code))

            async def deprecate(i):
                profile = ["prof-payments-standard", "prof-loans-low-risk"][i % 2]
                response = await client.post(
                    f"/v1/controlplane/profiles/{profile}/deprecate",
                    json={"version": 1, "deprecated_by": "ops"},
                    headers=headers,
                )
                answers.append(("deprecate", response.status_code))

            async def evaluate(_):
                response = await client.post(
                    "/v1/evaluate", json=payment(request_id=str(uuid.uuid4())), headers=headers
                )
                answers.append(("evaluate", response.status_code))

            calls = [register(invite) for invite in invites]
            calls += [deprecate(i) for i in range(120)] + [evaluate(i) for i in range(60)]
            random.Random(7).shuffle(calls)
            await asyncio.gather(*calls)

    with server(database_url_named(f"mandate-mix-{uuid.uuid4().hex[:8]}")) as app:
        asyncio.run(run(app.url))
    assert {status for kind, status in answers if kind == "register"} == {201}, answers
    assert {status for kind, status in answers if kind == "deprecate"} <= {200, 409}, answers
    assert {status for kind, status in answers if kind == "evaluate"} == {200}, answers
    assert Channel.objects.count() == 120
