"""Entitlements under real parallel requests, through a real server on PostgreSQL: balances
never go below zero, a run_id is consumed once, a seal is redeemed once per principal."""

import asyncio
import contextlib

import httpx
import pytest

from entitlements.models import Entitlement, Run, SealRedemption
from evidence.services.verification import verify_ledger
from tests.faults import database_url_named, server

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


@contextlib.contextmanager
def two_servers(name: str):
    """Two server processes on the test database: requests split between them really run at
    once (one process runs Django's sync views one at a time)."""
    with server(database_url_named(f"{name}-a")) as first, server(database_url_named(f"{name}-b")) as second:
        yield [first.url, second.url]


def in_parallel(urls: list[str], token: str, requests: list[tuple[str, dict]]) -> list[httpx.Response]:
    """Every (path, keyword arguments) POSTed at once, alternately to each server; the
    answers in order."""

    async def scenario():
        headers = {"Authorization": f"Bearer {token}"}
        clients = [httpx.AsyncClient(base_url=url, headers=headers, timeout=60) for url in urls]
        try:
            posts = [clients[n % len(clients)].post(path, **kwargs) for n, (path, kwargs) in enumerate(requests)]
            return await asyncio.gather(*posts)
        finally:
            for client in clients:
                await client.aclose()

    return asyncio.run(scenario())


def test_fifty_parallel_consumes_of_ten_runs_give_ten_200s_and_forty_402s(gbx):
    customer = gbx.make_customer()
    assert gbx.issue(customer, runs=10).status_code == 201
    with two_servers("gbx-consume") as urls:
        answers = in_parallel(
            urls,
            customer.token,
            [("/api/entitlement/consume", {"json": {"run_id": f"run-{n}"}}) for n in range(50)],
        )
    statuses = sorted(a.status_code for a in answers)
    assert statuses == [200] * 10 + [402] * 40, [a.content for a in answers if a.status_code not in (200, 402)]
    assert {a.json()["error"] for a in answers if a.status_code == 402} == {"entitlement_exhausted"}
    assert Entitlement.objects.get().runs_remaining == 0
    assert Run.objects.count() == 10
    assert sorted(a.json()["runs_remaining"] for a in answers if a.status_code == 200) == list(range(10))
    assert verify_ledger().valid


def test_parallel_consumes_of_one_run_id_take_one_run(gbx):
    customer = gbx.make_customer()
    gbx.issue(customer, runs=5)
    with two_servers("gbx-same-run") as urls:
        answers = in_parallel(urls, customer.token, [("/api/entitlement/consume", {"json": {"run_id": "once"}})] * 12)
    statuses = sorted(a.status_code for a in answers)
    assert statuses == [200] + [409] * 11, [a.content for a in answers]
    assert Entitlement.objects.get().runs_remaining == 4


def test_parallel_redemptions_of_one_seal_succeed_exactly_once(gbx):
    customer = gbx.make_customer()
    gbx.issue(customer, runs=1)
    svg = customer.run("sealed").json()["seal_svg"].encode()
    with two_servers("gbx-redeem") as urls:
        answers = in_parallel(
            urls,
            customer.token,
            [
                ("/api/entitlement/redeem_seal_once", {"content": svg, "headers": {"Content-Type": "image/svg+xml"}})
                for _ in range(10)
            ],
        )
    statuses = sorted(a.status_code for a in answers)
    assert statuses == [200] + [409] * 9, [a.content for a in answers]
    assert SealRedemption.objects.count() == 1
    assert Entitlement.objects.get(principal=customer.email).runs_remaining == 1
    assert verify_ledger().valid
