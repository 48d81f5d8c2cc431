"""``POST /api/entitlement/consume`` on the hot path (``entitlements/fastroute.py``) and its
group-committed write (``entitlements.services.consumption``, ``mandate_consume_runs``):
per item what ``runs.consume`` does, each item's outcome its own, evidence that verifies."""

import asyncio
import contextlib
import json
import threading
from datetime import timedelta

import httpx
import pytest
from django.db import connections
from django.utils import timezone

from entitlements.choices import RunEvent
from entitlements.fastroute import CONSUME, answer
from entitlements.models import Entitlement, Run
from entitlements.services.consumption import Consumption, consume_many
from entitlements.services.evidence import record_run_step
from entitlements.services.holders import Holder, principal_value
from entitlements.services.issuance import issue_runs
from evidence.models import AuditEvent
from evidence.services.verification import verify_chain, verify_ledger
from governance.choices import TokenStatus
from governance.group_commit import GroupCommit, _Pending
from governance.hotpath import HotPath, tokens
from governance.models import ApiToken, Person
from governance.services.people import create_person
from governance.services.tokens import issue_token
from governance.token_cache import TokenCache

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


class People:
    """People of the organization, each with an email and a token (a GBX customer)."""

    def __init__(self, organization):
        self.organization, self.count = organization, 0

    def make(self, runs: int | None = None, username: str | None = None, **fields) -> str:
        """A person's token secret; with ``runs``, a balance of that many for them."""
        self.count += 1
        fields.setdefault("email", f"Customer{self.count}@Example.com")
        person = create_person(self.organization, username or f"customer{self.count}", **fields)
        _, secret = issue_token(person, "job", [])
        if runs is not None:
            issue_runs(
                self.organization.pk,
                principal=principal_value(person.email or person.username),
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


@pytest.mark.parametrize(
    "fields",
    [
        {"username": 'o"dd\\name é😀\u2028x', "email": ""},  # the username is the principal
        {"email": '"quo\\ted"@Example.com'},
        {"email": "ünï@exämple.com"},
    ],
)
def test_the_statement_hashes_each_event_as_the_python_chain_does(people, fields):
    secret = people.make(runs=2, **fields)
    item = consumption(secret, "odd/run:1@x+y")
    record_run_step(item.holder, item.run_id, RunEvent.CHECKED, {"allowed": True})
    assert statuses(consume_many([item])) == ["consumed"]
    checked, consumed = chain_of(item)
    assert consumed.performer_id == item.holder.principal == consumed.payload["principal"]
    assert verify_chain(consumed.chain_id).valid  # re-hashed by evidence.canonical.event_hash
    assert verify_ledger().valid


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


# --- the hot endpoint in front of Django ------------------------------------------------------


@contextlib.contextmanager
def serving(app):
    """A hot path with the consume declaration in front of ``app``, torn down cleanly."""
    tokens.clear()
    route = HotPath(app, [CONSUME], threads=2)
    assert route.endpoints
    yield route
    both = threading.Barrier(2)  # each thread hands its connection back before the database goes

    def close():
        both.wait(timeout=10)
        connections.close_all()

    for future in [route.executor.submit(close) for _ in range(2)]:
        future.result()
    route.executor.shutdown()
    CONSUME.group.close()
    tokens.clear()


@pytest.fixture
def router():
    from governance.asgi import django_application

    with serving(django_application) as route:
        yield route


def bearer(secret: str, content_type: str = "application/json") -> dict:
    return {"Authorization": f"Bearer {secret}", "Content-Type": content_type}


# Django answers this content type itself (the hot path admits only a plain one).
TO_DJANGO = 'application/json; charset="utf-8"'


def post_all(app, calls, *, together: bool = False) -> list[httpx.Response]:
    """POST each (headers, body) to the consume URL through ``app``, in order or all at once."""

    async def scenario():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            posts = [client.post("/api/entitlement/consume", headers=h, content=b) for h, b in calls]
            if together:
                return await asyncio.gather(*posts)
            return [await post for post in posts]

    return asyncio.run(scenario())


def run_body(run_id) -> bytes:
    return json.dumps({"run_id": run_id}).encode()


def same_headers(hot, drf):
    assert sorted(hot.headers.keys()) == sorted(drf.headers.keys())
    for name in hot.headers:
        if name != "content-length":
            assert hot.headers[name] == drf.headers[name], name


def test_the_hot_path_answers_a_200_exactly_as_django_does(router, gbx, django_requests):
    hot_customer, drf_customer = gbx.make_customer(), gbx.make_customer()
    for customer in (hot_customer, drf_customer):
        assert gbx.issue(customer, runs=3).status_code == 201
    django_requests.clear()  # the issues above
    hot, drf = post_all(
        router,
        [(bearer(hot_customer.token), run_body("run-1")), (bearer(drf_customer.token, TO_DJANGO), run_body("run-1"))],
    )
    assert django_requests == ["/api/entitlement/consume"]  # only the second went through Django
    assert hot.status_code == drf.status_code == 200
    ids = {c.email: Entitlement.objects.get(principal=c.email).entitlement_id for c in (hot_customer, drf_customer)}
    assert hot.content == drf.content.replace(ids[drf_customer.email].encode(), ids[hot_customer.email].encode())
    assert hot.json() == {"entitlement_id": ids[hot_customer.email], "run_id": "run-1", "runs_remaining": 2}
    same_headers(hot, drf)
    # the same record either way: the run, the balance, the event
    hot_run, drf_run = (Run.objects.get(principal=c.email) for c in (hot_customer, drf_customer))
    fields = ("run_id", "state", "organization_id", "started_at", "inputs_sha256", "seal_id", "seal_json")
    assert [getattr(hot_run, f) for f in fields] == [getattr(drf_run, f) for f in fields]
    (hot_event,), (drf_event,) = (AuditEvent.objects.filter(chain_id=r.chain_id) for r in (hot_run, drf_run))
    assert hot_event.event_type == drf_event.event_type == RunEvent.CONSUMED
    assert (hot_event.performer_type, hot_event.performer_id) == ("person", hot_customer.email)
    assert drf_event.performer_type == "person"
    assert hot_event.payload == {
        **drf_event.payload,
        "principal": hot_customer.email,
        "entitlement_id": ids[hot_customer.email],
    }
    assert verify_ledger().valid


def test_a_402_and_a_409_are_answered_by_django_with_nothing_half_written(router, gbx, django_requests):
    customer, stranger = gbx.make_customer(), gbx.make_customer()
    gbx.issue(customer, runs=2)
    django_requests.clear()
    events = AuditEvent.objects.count()
    first, again, second, exhausted, none = post_all(
        router,
        [
            (bearer(customer.token), run_body("first")),
            (bearer(customer.token), run_body("first")),
            (bearer(customer.token), run_body("second")),
            (bearer(customer.token), run_body("third")),
            (bearer(stranger.token), run_body("any")),
        ],
    )
    assert [first.json()["runs_remaining"], second.json()["runs_remaining"]] == [1, 0]
    assert (again.status_code, again.json()["error"]) == (409, "run_id_already_consumed")
    assert (exhausted.status_code, exhausted.json()["error"]) == (402, "entitlement_exhausted")
    assert (none.status_code, none.json()["error"]) == (402, "no_entitlement")
    assert django_requests == ["/api/entitlement/consume"] * 3  # each refusal handed over once
    assert sorted(Run.objects.values_list("run_id", flat=True)) == ["first", "second"]
    assert Entitlement.objects.get().runs_remaining == 0
    assert AuditEvent.objects.count() == events + 2  # the two consumes' events, nothing else
    assert verify_ledger().valid


def test_parallel_consumes_through_the_hot_path_against_ten_runs_give_exactly_ten(router, gbx):
    customer = gbx.make_customer()
    gbx.issue(customer, runs=10)
    batches, recorded = CONSUME.group.batches, CONSUME.group.recorded
    answers = post_all(router, [(bearer(customer.token), run_body(f"p-{n}")) for n in range(50)], together=True)
    assert sorted(a.status_code for a in answers) == [200] * 10 + [402] * 40
    assert {a.json()["error"] for a in answers if a.status_code == 402} == {"entitlement_exhausted"}
    assert sorted(a.json()["runs_remaining"] for a in answers if a.status_code == 200) == list(range(10))
    assert CONSUME.group.recorded - recorded == 50  # every consume went through the group commit...
    assert CONSUME.group.batches - batches < 50  # ...and some shared a transaction
    assert Entitlement.objects.get().runs_remaining == 0 and Run.objects.count() == 10
    assert AuditEvent.objects.filter(event_type=RunEvent.CONSUMED).count() == 10
    assert verify_ledger().valid


def test_a_hot_consume_after_a_check_appends_after_it_and_the_ledger_verifies(router, gbx, django_requests):
    customer = gbx.make_customer()
    gbx.issue(customer, runs=2)
    assert customer.post("check", {"run_id": "job-7"}).status_code == 200
    django_requests.clear()
    (consumed,) = post_all(router, [(bearer(customer.token), run_body("job-7"))])
    assert consumed.status_code == 200 and django_requests == []
    run = Run.objects.get(run_id="job-7")
    chain = list(AuditEvent.objects.filter(chain_id=run.chain_id).order_by("sequence_no"))
    assert [e.event_type for e in chain] == [RunEvent.CHECKED, RunEvent.CONSUMED]
    assert chain[1].prev_hash == chain[0].hash
    assert (
        customer.post(
            "run_start", {"run_id": "job-7", "inputs_sha256": "a" * 64, "container_image": "img:1", "project_id": "p"}
        ).status_code
        == 200
    )
    assert verify_chain(run.chain_id).valid and verify_ledger().valid


def test_a_revoked_token_is_refused_on_its_next_hot_request(router, gbx):
    customer = gbx.make_customer()
    gbx.issue(customer, runs=5)
    (first,) = post_all(router, [(bearer(customer.token), run_body("a"))])
    assert first.status_code == 200  # the token is now cached by the hot path
    ApiToken.objects.update(status=TokenStatus.REVOKED)
    (second,) = post_all(router, [(bearer(customer.token), run_body("b"))])
    assert second.status_code == 401
    assert list(Run.objects.values_list("run_id", flat=True)) == ["a"]
    assert Entitlement.objects.get().runs_remaining == 4


def test_a_changed_email_makes_the_hot_path_hand_over_to_the_new_principal(router, gbx, django_requests):
    customer = gbx.make_customer()
    gbx.issue(customer, runs=5)
    django_requests.clear()
    assert post_all(router, [(bearer(customer.token), run_body("a"))])[0].status_code == 200
    Person.objects.filter(email=customer.email).update(email="renamed@example.com")
    (answer,) = post_all(router, [(bearer(customer.token), run_body("b"))])
    assert (answer.status_code, answer.json()["error"]) == (402, "no_entitlement")  # renamed@ holds nothing
    assert django_requests == ["/api/entitlement/consume"]
    assert Entitlement.objects.get().runs_remaining == 4


@pytest.mark.parametrize(
    "body",
    [
        b'{"run_id": "ok", "extra": 1}',
        b"{}",
        b'{"run_id": null}',
        b'{"run_id": 7}',
        b'{"run_id": "-starts-with-a-dash"}',
        b'{"run_id": "has space"}',
        json.dumps({"run_id": "x" * 201}).encode(),
        b'["run_id"]',
        b'"run"',
        b'{"run_id": ',
        b'{"run_id": "a", "run_id": "b"}',
        b"\xff",
    ],
)
def test_bodies_the_hot_path_does_not_answer_are_answered_by_django_alike(router, gbx, body):
    from governance.asgi import django_application

    hot_customer, drf_customer = gbx.make_customer(), gbx.make_customer()
    for customer in (hot_customer, drf_customer):
        gbx.issue(customer, runs=3)
    (hot,) = post_all(router, [(bearer(hot_customer.token), body)])
    (drf,) = post_all(django_application, [(bearer(drf_customer.token), body)])
    ids = [Entitlement.objects.get(principal=c.email).entitlement_id.encode() for c in (hot_customer, drf_customer)]
    assert (hot.status_code, hot.content) == (drf.status_code, drf.content.replace(ids[1], ids[0]))
    same_headers(hot, drf)
    if hot.status_code == 200:  # duplicate keys: the last one counts, as for Django
        assert hot.json()["run_id"] == "b"


def test_an_oidc_or_unknown_caller_is_left_to_django(router, gbx, django_requests):
    customer = gbx.make_customer()
    gbx.issue(customer, runs=3)
    django_requests.clear()
    id_token = {"Authorization": "Bearer eyJhbGciOiJSUzI1NiJ9.e30.c2ln", "Content-Type": "application/json"}
    unknown, oidc = post_all(router, [(bearer("mdt_nope_nope"), run_body("a")), (id_token, run_body("a"))])
    assert (unknown.status_code, oidc.status_code) == (401, 401)
    assert len(django_requests) == 2
    assert Run.objects.count() == 0


def test_the_synchronous_answer_consumes_alone_and_hands_over_refusals(gbx):
    customer = gbx.make_customer()
    gbx.issue(customer, runs=1)
    tokens.clear()
    first = answer(customer.token, run_body("sync-1"))
    assert json.loads(first)["runs_remaining"] == 0
    assert answer(customer.token, run_body("sync-1")) is None  # 409: Django's
    assert answer(customer.token, run_body("sync-2")) is None  # 402: Django's
    assert answer(customer.token, b"{") is None
    assert answer("mdt_unknown_secret", run_body("sync-3")) is None
    assert Run.objects.count() == 1 and verify_ledger().valid
    tokens.clear()
