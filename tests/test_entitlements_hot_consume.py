"""``POST /api/entitlement/consume`` on the hot path (``entitlements/fastroute.py``) and its
group-committed write (``entitlements.services.consumption``, ``mandate_consume_runs``):
per item what ``runs.consume`` does, each item's outcome its own, evidence that verifies."""

import threading
from datetime import timedelta

import pytest
from django.db import connections
from django.utils import timezone

from entitlements.choices import RunEvent
from entitlements.models import Entitlement, Run
from entitlements.services.consumption import Consumption, consume_many
from entitlements.services.evidence import record_run_step
from entitlements.services.holders import Holder, principal_value
from entitlements.services.issuance import issue_runs
from evidence.models import AuditEvent
from evidence.services.verification import verify_chain, verify_ledger
from governance.choices import TokenStatus
from governance.group_commit import GroupCommit, _Pending
from governance.models import ApiToken, Person
from governance.services.people import create_person
from governance.services.tokens import issue_token
from governance.token_cache import TokenCache

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


class People:
    """People of the organization, each with an email and a token (a GBX customer)."""

    def __init__(self, organization):
        self.organization, self.count = organization, 0

    def make(self, runs: int | None = None, **fields) -> str:
        """A person's token secret; with ``runs``, a balance of that many for them."""
        self.count += 1
        fields.setdefault("email", f"Customer{self.count}@Example.com")
        person = create_person(self.organization, f"customer{self.count}", **fields)
        _, secret = issue_token(person, "job", [])
        if runs is not None:
            issue_runs(
                self.organization.pk,
                principal=person.email or person.username,
                plan_id="gbx_standard",
                runs_total=runs,
                expires_at=timezone.now() + timedelta(days=30),
                issued_by="partner",
            )
        return secret


@pytest.fixture
def people(organization):
    return People(organization)


def consumption(secret: str, run_id: str) -> Consumption:
    """The item the hot path writes for this caller and run_id."""
    caller = TokenCache().get(secret)
    holder = Holder(str(caller.organization.pk), principal_value(caller.principal_name), "person")
    return Consumption(holder, run_id, caller.check, caller.principal_name)


def statuses(results) -> list[str]:
    return [result["status"] for result in results]


def chain_of(item: Consumption) -> list[AuditEvent]:
    from entitlements.models.runs import run_chain_id

    chain = run_chain_id(item.holder.organization_id, item.holder.principal, item.run_id)
    return list(AuditEvent.objects.filter(chain_id=chain).order_by("sequence_no"))


# --- the group-committed write ------------------------------------------------------------


def test_a_batch_gives_each_consume_its_own_outcome_and_writes_only_the_successes(people):
    rich, poor, nobody = people.make(runs=3), people.make(runs=1), people.make()
    consume_many([consumption(rich, "before")])
    items = [
        consumption(rich, "r-1"),
        consumption(poor, "p-1"),
        consumption(nobody, "n-1"),  # no balance: 402
        consumption(rich, "before"),  # consumed in an earlier batch: 409
        consumption(poor, "p-2"),  # its one run went to p-1 just before: 402
        consumption(rich, "r-1"),  # the same run_id again in this batch: 409
    ]
    results = consume_many(items)
    assert statuses(results) == ["consumed", "consumed", "exhausted", "conflict", "exhausted", "conflict"]
    rich_balance = Entitlement.objects.get(principal=items[0].holder.principal)
    assert results[0] == {"status": "consumed", "entitlement_id": rich_balance.entitlement_id, "runs_remaining": 1}
    assert rich_balance.runs_remaining == 1
    assert Entitlement.objects.get(principal=items[1].holder.principal).runs_remaining == 0
    assert sorted(Run.objects.values_list("run_id", flat=True)) == ["before", "p-1", "r-1"]
    run = Run.objects.get(run_id="r-1")
    assert (run.principal, run.entitlement_id, run.state) == ("customer1@example.com", rich_balance.pk, "consumed")
    for refused in (items[2], items[4]):
        assert chain_of(refused) == []  # nothing of a refused item
    (event,) = chain_of(items[0])
    assert event.event_type == RunEvent.CONSUMED
    assert event.payload == {
        "run_id": "r-1",
        "principal": "customer1@example.com",
        "entitlement_id": rich_balance.entitlement_id,
        "runs_remaining": 1,
    }
    assert (event.performer_type, event.performer_id) == ("person", "customer1@example.com")
    verdict = verify_ledger()
    assert verdict.valid and verdict.events_checked == AuditEvent.objects.count()


def test_a_consume_after_a_check_appends_after_the_check_in_the_run_chain(people):
    secret = people.make(runs=2)
    item = consumption(secret, "checked-first")
    record_run_step(item.holder, item.run_id, RunEvent.CHECKED, {"allowed": True})
    assert statuses(consume_many([item, consumption(secret, "unchecked")])) == ["consumed", "consumed"]
    checked, consumed = chain_of(item)
    assert (checked.event_type, consumed.event_type) == (RunEvent.CHECKED, RunEvent.CONSUMED)
    assert (consumed.sequence_no, consumed.prev_hash) == (2, checked.hash)
    assert consumed.ledger_seq > checked.ledger_seq
    assert verify_chain(checked.chain_id).valid and verify_ledger().valid


def test_the_statement_refuses_a_token_that_no_longer_stands_and_writes_nothing(people):
    revoked, renamed, kept = people.make(runs=2), people.make(runs=2), people.make(runs=2)
    items = [consumption(revoked, "a"), consumption(renamed, "b"), consumption(kept, "c")]
    ApiToken.objects.filter(pk=items[0].token["id"]).update(status=TokenStatus.REVOKED)
    # the person's email changed since the token was cached: the principal is no longer theirs
    Person.objects.filter(api_tokens__id=items[1].token["id"]).update(email="someone-else@example.com")
    assert statuses(consume_many(items)) == ["unauthenticated", "unauthenticated", "consumed"]
    assert list(Run.objects.values_list("run_id", flat=True)) == ["c"]
    assert sorted(Entitlement.objects.values_list("runs_remaining", flat=True)) == [1, 2, 2]
    assert verify_ledger().valid


def test_a_failing_statement_leaves_the_others_written_each_alone(people):
    secret, other = people.make(runs=5), people.make(runs=5)
    broken = consumption(other, "x" * 201)  # longer than the column: the database refuses the statement
    batch = [_Pending(item) for item in (consumption(secret, "g-1"), broken, consumption(secret, "g-2"))]
    writer = GroupCommit(consume_many)
    writer._write(batch)  # fails as a whole, then each item is written alone
    assert [p.result["status"] if p.result else type(p.error).__name__ for p in batch] == [
        "consumed",
        "DataError",
        "consumed",
    ]
    assert sorted(Run.objects.values_list("run_id", flat=True)) == ["g-1", "g-2"]
    assert Entitlement.objects.get(principal=broken.holder.principal).runs_remaining == 5
    assert verify_ledger().valid


def test_parallel_batches_of_fifty_consumes_of_ten_runs_take_exactly_ten(people):
    secret = people.make(runs=10)
    others = [people.make(runs=3) for _ in range(3)]
    barrier = threading.Barrier(5)
    results, errors = [], []

    def consume(thread: int):
        try:
            barrier.wait()
            for batch in range(2):
                items = [consumption(secret, f"t{thread}-{batch}-{n}") for n in range(5)]
                items.append(consumption(others[thread % 3], f"o{thread}-{batch}"))
                results.extend(zip(items, consume_many(items), strict=True))
        except Exception as exc:  # noqa: BLE001 (reported below)
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=consume, args=(n,)) for n in range(5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    mine = [result for item, result in results if item.token["id"] == consumption(secret, "x").token["id"]]
    assert sorted(statuses(mine)) == ["consumed"] * 10 + ["exhausted"] * 40
    assert sorted(r["runs_remaining"] for r in mine if r["status"] == "consumed") == list(range(10))
    assert Entitlement.objects.get(principal="customer1@example.com").runs_remaining == 0
    assert Run.objects.filter(principal="customer1@example.com").count() == 10
    assert Run.objects.exclude(principal="customer1@example.com").count() == 3 + 3 + 2  # 4, 4 and 2 tries
    assert AuditEvent.objects.filter(event_type=RunEvent.CONSUMED).count() == 18
    assert verify_ledger().valid
