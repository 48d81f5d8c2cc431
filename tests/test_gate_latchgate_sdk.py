"""LatchGate's public Python SDK (``pip install latchgate``, a dev dependency here), unchanged,
against a real Mandate server over TCP: it makes its own DPoP key, asks ``POST /v1/leases``
with no credential (open leases, as a dev gate runs), executes through the hot path, reads the
receipt, the action's egress and a held action's approval status, and maps errors to its
exceptions. Skipped, saying why, where the package is not installed."""

import asyncio
import uuid

import httpx
import pytest
from django.test import override_settings

from controlplane.gate import acl, audit
from controlplane.gate.registry import reload
from evidence.models import Receipt
from evidence.services.receipts import verify_receipt
from governance.choices import Role
from governance.services.people import create_person, default_organization
from governance.services.tokens import issue_token
from tests.faults import database_url_named, free_port, server
from tests.gate_world import Target, local_actions, target  # noqa: F401  (fixture)

latchgate = pytest.importorskip(
    "latchgate", reason="LatchGate's Python SDK is not installed (pip install latchgate; it is in .[dev])"
)

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

OPEN_AGENT = "anonymous"  # the SDK sends no agent id: an open lease's principal


@pytest.fixture
def gate_server(tmp_path, target):  # noqa: F811
    """A server with open leases, the test catalogue, ``anonymous`` granted the local actions,
    and a token of an operator of the open leases' organization."""
    actions = local_actions(tmp_path)
    with override_settings(MANDATE_ACTIONS_DIR=actions):
        reload()
        acl.grant(OPEN_AGENT, ["local_fetch", "local_delete"], actor=audit.SYSTEM)
    operator = create_person(default_organization(), "ops", roles=[Role.PLATFORM_OPERATOR])
    _, token = issue_token(operator, "approvals", [Role.PLATFORM_OPERATOR])
    port = free_port()
    with server(
        database_url_named(f"mandate-sdk-{uuid.uuid4().hex[:8]}"),
        port,
        PUBLIC_BASE_URL=f"http://127.0.0.1:{port}",
        MANDATE_ACTIONS_DIR=str(actions),
        MANDATE_GATE_OPEN_LEASES="true",
        MANDATE_GATE_FS_ROOT=str(tmp_path / "fs"),
    ) as running:

        class Gate:
            url = running.url
            operator = {"Authorization": f"Bearer {token}"}
            target_url = target

        yield Gate


def test_the_latchgate_sdk_leases_executes_and_reads_its_receipt_unchanged(gate_server):
    async def agent():
        async with latchgate.LatchGateClient(base_url=gate_server.url) as client:
            await client.connect(max_calls=5, max_cost_usd_cents=100)
            assert client.session_id.startswith("ses_") and client.lease_jti.startswith("lea_")
            result = await client.execute("local_fetch", {"url": f"{gate_server.target_url}/from-sdk"})
            receipt = await client.get_receipt(result.receipt_id)
            egress = await client.get_action_egress("local_fetch")  # DPoP headers on a public route
            return client.session_id, result, receipt, egress

    session_id, result, receipt, egress = asyncio.run(agent())
    assert isinstance(result, latchgate.ActionResult)
    assert result.output["status"] == 200 and result.verification["is_fully_successful"] is True
    assert result.trace_id.startswith("trc_") and result.grant_id.startswith("grant_")
    assert Target.seen[-1][:2] == ("GET", "/from-sdk")
    assert isinstance(receipt, latchgate.ExecutionReceipt) and receipt.is_fully_successful
    assert (receipt.receipt_id, receipt.grant_id) == (result.receipt_id, result.grant_id)
    stored = Receipt.objects.get(receipt_id=result.receipt_id)
    assert receipt.result_hash == stored.result_hash and verify_receipt(stored) == "verified"
    assert stored.session_id == session_id
    assert (egress.profile, egress.allowed_domains) == ("proxy_allowlist", ["127.0.0.1"])


def test_the_latchgate_sdk_waits_for_an_approval_and_reads_its_receipt(gate_server):
    async def held(client):
        with pytest.raises(latchgate.LatchGateApprovalRequired) as raised:
            await client.execute("local_delete", {"url": f"{gate_server.target_url}/things/1"})
        approval_id = raised.value.approval_id
        pending = await client.get_approval_status(approval_id)
        assert pending.is_pending and pending.approval_id == approval_id
        approved = httpx.post(
            f"{gate_server.url}/v1/approvals/{approval_id}/approve",
            headers={**gate_server.operator, "Content-Type": "application/json"},  # as LatchGate's CLI sends it
        )
        assert approved.status_code == 200, approved.text
        status = await client.get_approval_status(approval_id)
        assert status.is_approved and status.receipt_id == approved.json()["receipt_id"]
        return await client.get_receipt(status.receipt_id)

    async def agent():
        async with latchgate.LatchGateClient(base_url=gate_server.url, agent_id="sdk-agent") as client:
            return await held(client)  # connects lazily: agent_id is set

    receipt = asyncio.run(agent())
    assert receipt.is_fully_successful and receipt.failure_class is None
    assert Target.seen[-1][:2] == ("DELETE", "/things/1")


def test_the_latchgate_sdk_maps_mandate_refusals_to_its_exceptions(gate_server):
    async def agent():
        async with latchgate.LatchGateClient(base_url=gate_server.url) as client:
            await client.connect(max_calls=1)
            with pytest.raises(latchgate.LatchGateDenied) as schema:
                await client.execute("local_fetch", {"url": 5})
            with pytest.raises(latchgate.LatchGateDenied) as policy:
                await client.execute("http_post", {"url": "https://httpbin.org/post", "body": "{}"})  # not granted
            await client.execute("local_fetch", {"url": f"{gate_server.target_url}/last"})
            with pytest.raises(latchgate.LatchGateBudgetExhausted):
                await client.execute("local_fetch", {"url": f"{gate_server.target_url}/one-too-many"})
            return schema.value.reason, policy.value.reason

    schema_reason, policy_reason = asyncio.run(agent())
    assert schema_reason.startswith("schema_violation")
    assert policy_reason.startswith("policy_denied: ") and "http_post" in policy_reason
