"""Availability leases (``POST /governance/lease/heartbeat``, parking, revival): over HTTP
through Django and through the hot path in front of it, the service's statement, the park
task, real parallel heartbeats against PostgreSQL, and the devices' evidence chains."""

import asyncio
import json
import re
import threading
import time
from datetime import timedelta

import httpx
import pytest
from django.db import connections
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from eth_account import Account
from rest_framework.test import APIClient

from evidence.models import AuditEvent
from evidence.services.verification import verify_chain, verify_ledger
from governance.api.device_leases import HEARTBEAT
from governance.choices import AccessClass, AvailabilityState, InstallState, MembershipStatus, WalletPurpose
from governance.hotpath import HotRequest, drive
from governance.install_ports import entitlements_of
from governance.models import Device, Organization, PrincipalWallet, WalletSession
from governance.services.device_leases import (
    PARKED_EVENT,
    REVIVED_EVENT,
    LeaseRefresh,
    SessionKey,
    holdings,
    park_expired_devices,
    refresh_leases,
    sessions,
)
from governance.services.install_rules import device_chain_id
from governance.services.wallet_sessions import revoke_wallet_session
from governance.tasks import park_expired_devices_task
from governance.token_cache import CachedWalletSession
from tests.faults import database_url_named, server
from tests.hot_serving import serving
from tests.install_world import (
    DOMAIN,
    ORG_ROOT_ID,
    PRINCIPAL_ID,
    make_active_device,
    make_owner,
    open_wallet_session,
    set_governance_entitlement,
)

HEARTBEAT_URL = "/governance/lease/heartbeat"
CORRELATION_ID = re.compile(r"\Areq_[0-9a-f]{32}\Z")
LEASE_DAYS = 30


@pytest.fixture(autouse=True)
def _our_domain(settings):
    settings.PUBLIC_BASE_URL = f"https://{DOMAIN}"
    settings.MANDATE_SIWE_DOMAIN = ""
    settings.MANDATE_SIWE_CHAIN_IDS = [1]
    settings.MANDATE_WEB3_RPC_URL = ""


@pytest.fixture(autouse=True)
def _fresh_heartbeat_caches():
    """The hot path's per-process caches outlive each test's rollback."""
    sessions.clear()
    holdings.clear()
    yield
    sessions.clear()
    holdings.clear()


class Launcher:
    """An owner's launcher: their wallet session and heartbeats for their devices."""

    def __init__(self, owner, session: str):
        self.owner, self.session = owner, session

    def body(self, device_id: str = "desktop-7f6f3a9b", **changes) -> dict:
        body = {
            "wallet": self.owner.wallet,
            "org_root_id": self.owner.organization.org_root_id,
            "principal_id": self.owner.principal.principal_id,
            "device_id": device_id,
        }
        body.update(changes)
        return {name: value for name, value in body.items() if value is not None}

    def heartbeat(self, device_id: str = "desktop-7f6f3a9b", *, session: str | None = None, **changes):
        """Through Django (the test client never reaches the hot path)."""
        return APIClient().post(
            HEARTBEAT_URL,
            json.dumps(self.body(device_id, **changes)),
            content_type="application/json",
            HTTP_AUTHORIZATION=f"Bearer {session or self.session}",
        )


def launcher_for(owner) -> Launcher:
    return Launcher(owner, open_wallet_session(APIClient(), owner.account))


@pytest.fixture
def launcher(db):
    owner = make_owner()
    make_active_device(owner)
    return launcher_for(owner)


def refusal(answer, status: int, code: str) -> dict:
    """The answer is edut's refusal: the status, the code twice, the correlation id in the
    body and the header."""
    assert answer.status_code == status, answer.content
    body = answer.json()
    assert (body["error"], body["code"]) == (code, code), body
    assert CORRELATION_ID.match(body["correlation_id"])
    assert answer.headers["X-Correlation-ID"] == body["correlation_id"]
    return body


def device(device_id: str = "desktop-7f6f3a9b") -> Device:
    return Device.objects.get(device_id=device_id)


def device_events(found: Device) -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(chain_id=device_chain_id(found)).order_by("sequence_no"))


def expire(found: Device) -> None:
    Device.objects.filter(pk=found.pk).update(lease_expires_at=timezone.now() - timedelta(minutes=1))


# --- the heartbeat over HTTP ---------------------------------------------------------------------


def test_a_heartbeat_refreshes_the_lease_for_thirty_days(launcher):
    Device.objects.update(access_class=AccessClass.OFFLINE, lease_expires_at=timezone.now() + timedelta(hours=1))
    before = timezone.now().replace(microsecond=0)
    answer = launcher.heartbeat()
    assert answer.status_code == 200, answer.content
    body = answer.json()
    assert set(body) == {"status", "availability_state", "lease_expires_at"}
    assert (body["status"], body["availability_state"]) == ("lease_refreshed", "active")
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", body["lease_expires_at"])  # edut's form
    assert CORRELATION_ID.match(answer.headers["X-Correlation-ID"])
    found = device()
    assert found.lease_expires_at.isoformat().replace("+00:00", "Z") == body["lease_expires_at"]
    assert before + timedelta(days=LEASE_DAYS) <= found.lease_expires_at <= timezone.now() + timedelta(days=LEASE_DAYS)
    assert found.last_heartbeat_at >= before
    assert (found.access_class, found.availability_state) == (AccessClass.CONNECTED, AvailabilityState.ACTIVE)
    assert device_events(found) == []  # a plain refresh changes nothing worth a record


def test_the_lease_length_is_a_setting(launcher, settings):
    settings.MANDATE_DEVICE_LEASE_SECONDS = 3600
    Device.objects.update(lease_expires_at=timezone.now() + timedelta(minutes=1))
    assert launcher.heartbeat().status_code == 200
    assert abs(device().lease_expires_at - timezone.now() - timedelta(hours=1)) < timedelta(seconds=5)


def test_every_answer_has_its_own_correlation_id(launcher):
    ids = {launcher.heartbeat().headers["X-Correlation-ID"] for _ in range(3)}
    ids.add(refusal(launcher.heartbeat(device_id="nope"), 404, "device_not_found")["correlation_id"])
    assert len(ids) == 4


def test_a_refusal_is_logged_with_its_correlation_id(launcher, caplog):
    with caplog.at_level("INFO", logger="governance.api.device_leases"):
        body = refusal(launcher.heartbeat(device_id="nope"), 404, "device_not_found")
    assert any(body["correlation_id"] in record.getMessage() for record in caplog.records)


def test_without_a_wallet_session_the_heartbeat_is_401(launcher):
    client = APIClient()
    missing = client.post(HEARTBEAT_URL, launcher.body(), format="json")
    refusal(missing, 401, "wallet_session_invalid")
    assert missing.headers["WWW-Authenticate"] == 'Bearer realm="mandate"'
    for header in ("Bearer mws_abc_unknown", "Bearer mdt_an_api_token", "Basic eDp5", "Bearer "):
        refusal(
            client.post(HEARTBEAT_URL, launcher.body(), format="json", HTTP_AUTHORIZATION=header),
            401,
            "wallet_session_invalid",
        )


def test_an_expired_or_revoked_wallet_session_is_401(launcher):
    assert launcher.heartbeat().status_code == 200
    WalletSession.objects.update(expires_at=timezone.now() - timedelta(seconds=1))
    refusal(launcher.heartbeat(), 401, "wallet_session_invalid")
    WalletSession.objects.update(expires_at=timezone.now() + timedelta(hours=1))
    assert launcher.heartbeat().status_code == 200
    revoke_wallet_session(WalletSession.objects.get())
    refusal(launcher.heartbeat(), 401, "wallet_session_invalid")


@pytest.mark.parametrize(
    "changes",
    [
        {"extra": "x"},  # unknown fields
        {"device_id": None},  # a field missing
        {"wallet": "0x123"},
        {"wallet": 7},
        {"org_root_id": ""},
        {"principal_id": ["human.joshua"]},
        {"device_id": "has space"},
        {"device_id": "x" * 121},
    ],
)
def test_a_malformed_heartbeat_is_400_invalid_request(launcher, changes):
    refusal(launcher.heartbeat(**changes), 400, "invalid_request")
    assert device().last_heartbeat_at is None


@pytest.mark.parametrize("content", [b"", b"{", b"[]", b'"x"', b"\xff", b'{"n": 1e999}'])
def test_a_body_that_is_not_a_json_object_is_400_invalid_request(launcher, content):
    answer = APIClient().post(
        HEARTBEAT_URL, content, content_type="application/json", HTTP_AUTHORIZATION=f"Bearer {launcher.session}"
    )
    refusal(answer, 400, "invalid_request")


def test_a_body_that_is_not_json_is_415(launcher):
    answer = APIClient().post(
        HEARTBEAT_URL, "wallet=x", content_type="text/plain", HTTP_AUTHORIZATION=f"Bearer {launcher.session}"
    )
    refusal(answer, 415, "unsupported_media_type")


def test_a_wallet_that_is_not_its_checksum_is_400(launcher):
    wallet = launcher.owner.wallet
    wrong = wallet[:2] + "".join(c.swapcase() if c.isalpha() else c for c in wallet[2:])
    refusal(launcher.heartbeat(wallet=wrong), 400, "address_checksum_invalid")
    assert launcher.heartbeat(wallet=wallet.lower()).status_code == 200  # lower case is accepted


def test_a_heartbeat_for_another_wallet_than_the_sessions_is_403_wallet_mismatch(launcher):
    other = Account.create().address
    refusal(launcher.heartbeat(wallet=other), 403, "wallet_mismatch")


def test_an_unknown_root_or_principal_is_404(launcher):
    refusal(launcher.heartbeat(org_root_id="org.other.root"), 404, "organization_not_found")
    refusal(launcher.heartbeat(principal_id="human.nobody"), 404, "principal_not_found")


def test_the_payment_wallet_cannot_keep_a_device_alive_403_wallet_not_owner(launcher):
    owner = launcher.owner
    payment_session = open_wallet_session(APIClient(), owner.payment_account)
    answer = launcher.heartbeat(session=payment_session, wallet=owner.payment_account.address)
    refusal(answer, 403, "wallet_not_owner")


@pytest.mark.parametrize("status", [MembershipStatus.SUSPENDED, MembershipStatus.REVOKED, MembershipStatus.INVITED])
def test_a_member_who_is_not_active_is_403_membership_inactive(launcher, status):
    launcher.owner.principal.membership_status = status
    launcher.owner.principal.save()
    refusal(launcher.heartbeat(), 403, "membership_inactive")


@pytest.mark.parametrize("status", ["inactive", "expired"])
def test_without_an_active_governance_entitlement_the_heartbeat_is_403(launcher, status):
    set_governance_entitlement(launcher.owner.organization, launcher.owner.wallet, status)
    refusal(launcher.heartbeat(), 403, "entitlement_inactive")
    assert device().last_heartbeat_at is None


def test_with_no_governance_entitlement_at_all_the_heartbeat_is_403(db):
    owner = make_owner(entitlement=None)
    make_active_device(owner)
    refusal(launcher_for(owner).heartbeat(), 403, "entitlement_inactive")


def test_an_unknown_device_is_404_device_not_found(launcher):
    refusal(launcher.heartbeat(device_id="laptop-unknown"), 404, "device_not_found")


def test_a_device_of_another_principal_or_wallet_is_404_device_not_found(launcher):
    owner = launcher.owner
    other = make_owner(principal_id="human.ada", organization=owner.organization)
    make_active_device(other, "ada-laptop")
    refusal(launcher.heartbeat(device_id="ada-laptop"), 404, "device_not_found")
    # the same principal's second ownership wallet installed it: not this wallet's device
    second = Account.create()
    PrincipalWallet.objects.create(principal=owner.principal, address=second.address, purpose=WalletPurpose.OWNERSHIP)
    Device.objects.create(
        device_id="second-wallet-box",
        wallet=second.address,
        organization=owner.organization,
        principal=owner.principal,
        platform="linux",
        install_state=InstallState.ACTIVE,
    )
    refusal(launcher.heartbeat(device_id="second-wallet-box"), 404, "device_not_found")


@pytest.mark.parametrize("state", [InstallState.NOT_INSTALLED, InstallState.VERIFIED, InstallState.POLICY_MISMATCH])
def test_a_device_not_installed_is_409_device_not_installed(launcher, state):
    Device.objects.update(install_state=state)
    refusal(launcher.heartbeat(), 409, "device_not_installed")
    assert device().last_heartbeat_at is None


def test_a_body_over_four_kib_is_413(launcher):
    body = json.dumps(launcher.body(device_id="x" * 5000))
    answer = APIClient().post(
        HEARTBEAT_URL, body, content_type="application/json", HTTP_AUTHORIZATION=f"Bearer {launcher.session}"
    )
    assert answer.status_code == 413


def test_get_is_405_in_edut_shape(launcher):
    answer = APIClient().get(HEARTBEAT_URL, HTTP_AUTHORIZATION=f"Bearer {launcher.session}")
    refusal(answer, 405, "method_not_allowed")


# --- expiry, parking, revival --------------------------------------------------------------------


def test_expired_leases_are_parked_by_the_task_each_with_an_event(launcher):
    owner = launcher.owner
    stale, fresh = device(), make_active_device(owner, "fresh-box")
    expire(stale)
    make_active_device(owner, "parked-box", availability_state=AvailabilityState.PARKED)
    Device.objects.filter(device_id="parked-box").update(lease_expires_at=timezone.now() - timedelta(days=3))
    assert park_expired_devices_task() == 1
    assert device().availability_state == AvailabilityState.PARKED
    assert device("fresh-box").availability_state == AvailabilityState.ACTIVE
    (event,) = device_events(stale)
    assert event.event_type == PARKED_EVENT
    assert event.payload["device_id"] == stale.device_id and event.payload["wallet"] == owner.wallet
    assert (event.performer_type, event.performer_id) == ("system", "mandate")
    assert device_events(fresh) == [] and device_events(device("parked-box")) == []
    assert park_expired_devices_task() == 0  # nothing twice
    assert verify_chain(device_chain_id(stale)).valid and verify_ledger().valid


def test_a_heartbeat_revives_a_parked_device_while_the_entitlement_is_active(launcher):
    expire(device())
    assert park_expired_devices() == 1
    answer = launcher.heartbeat()
    assert answer.status_code == 200, answer.content
    assert answer.json()["availability_state"] == "active"
    found = device()
    assert found.availability_state == AvailabilityState.ACTIVE
    assert found.lease_expires_at > timezone.now() + timedelta(days=LEASE_DAYS - 1)
    parked, revived = device_events(found)
    assert (parked.event_type, revived.event_type) == (PARKED_EVENT, REVIVED_EVENT)
    assert revived.prev_hash == parked.hash
    assert revived.payload["lease_expires_at"] == answer.json()["lease_expires_at"]
    assert (revived.performer_type, revived.performer_id) == ("wallet", launcher.owner.wallet)
    assert launcher.heartbeat().status_code == 200
    assert len(device_events(found)) == 2  # an active device's heartbeat writes nothing
    assert verify_chain(device_chain_id(found)).valid and verify_ledger().valid


def test_a_parked_device_is_not_revived_once_the_entitlement_is_inactive(launcher, settings):
    assert launcher.heartbeat().status_code == 200  # the entitlement is cached as active...
    expire(device())
    assert park_expired_devices() == 1
    settings.MANDATE_HEARTBEAT_CACHE_SECONDS = 3600
    set_governance_entitlement(launcher.owner.organization, launcher.owner.wallet, "inactive")
    refusal(launcher.heartbeat(), 403, "entitlement_inactive")  # ...but a revival reads it afresh
    found = device()
    assert found.availability_state == AvailabilityState.PARKED
    assert [e.event_type for e in device_events(found)] == [PARKED_EVENT]
    set_governance_entitlement(launcher.owner.organization, launcher.owner.wallet, "active")
    assert launcher.heartbeat().status_code == 200
    assert [e.event_type for e in device_events(device())] == [PARKED_EVENT, REVIVED_EVENT]
    assert verify_ledger().valid


def test_a_lease_expired_but_not_yet_parked_is_simply_refreshed(launcher):
    expire(device())
    assert launcher.heartbeat().status_code == 200
    assert park_expired_devices() == 0
    assert device_events(device()) == []


def test_a_suspended_membership_or_removed_ownership_wallet_stops_the_next_heartbeat(launcher, settings):
    settings.MANDATE_HEARTBEAT_CACHE_SECONDS = 3600
    owner = launcher.owner
    assert launcher.heartbeat().status_code == 200  # the entitlement is cached now
    owner.principal.membership_status = MembershipStatus.SUSPENDED
    owner.principal.save()
    refusal(launcher.heartbeat(), 403, "membership_inactive")  # the statement checks it every time
    owner.principal.membership_status = MembershipStatus.ACTIVE
    owner.principal.save()
    assert launcher.heartbeat().status_code == 200
    PrincipalWallet.objects.filter(address=owner.wallet).delete()
    refusal(launcher.heartbeat(), 403, "wallet_not_owner")


def test_a_root_id_given_to_another_organization_is_seen_at_once(launcher, settings):
    settings.MANDATE_HEARTBEAT_CACHE_SECONDS = 3600
    assert launcher.heartbeat().status_code == 200  # the root's organization is cached now
    organization = launcher.owner.organization
    organization.org_root_id = "org.renamed.root"
    organization.save()
    other = Organization.objects.create(slug="other", name="Other", org_root_id=ORG_ROOT_ID)
    make_owner(principal_id="human.someone", organization=other)  # the old root id, another organization
    refusal(launcher.heartbeat(org_root_id=ORG_ROOT_ID), 404, "principal_not_found")
    assert launcher.heartbeat(org_root_id="org.renamed.root").status_code == 200


def test_an_inactive_entitlement_stops_heartbeats_within_the_cache_time(launcher, settings):
    settings.MANDATE_HEARTBEAT_CACHE_SECONDS = 0.3
    assert launcher.heartbeat().status_code == 200
    set_governance_entitlement(launcher.owner.organization, launcher.owner.wallet, "inactive")
    assert launcher.heartbeat().status_code == 200  # the entitlement read 0.3 s ago still counts
    time.sleep(0.35)
    refusal(launcher.heartbeat(), 403, "entitlement_inactive")
    set_governance_entitlement(launcher.owner.organization, launcher.owner.wallet, "active")
    assert launcher.heartbeat().status_code == 200  # an inactive holding is never taken from the cache


# --- the service: the statement, the round trips, parking under concurrency ------------------------


@pytest.mark.postgres
def test_one_statement_refreshes_a_batch_each_with_its_own_outcome(launcher):
    owner = launcher.owner
    for name in ("b", "c", "d"):
        make_active_device(owner, name)
    Device.objects.filter(device_id="c").update(availability_state=AvailabilityState.PARKED)
    Device.objects.filter(device_id="d").update(install_state=InstallState.VERIFIED)
    session = WalletSession.objects.get()
    revoked = WalletSession.objects.create(
        wallet=owner.wallet, chain_id=1, domain=DOMAIN, prefix="revoked1", secret_hash="x" * 64,
        status="revoked", expires_at=timezone.now() + timedelta(hours=1),
    )  # fmt: skip
    in_memory = CachedWalletSession(str(session.pk), owner.wallet, time.monotonic())
    stale = CachedWalletSession(str(revoked.pk), owner.wallet, time.monotonic())  # revoked since it was cached
    key = SessionKey.of(launcher.session)

    def item(device_id, session=in_memory, principal_id=PRINCIPAL_ID):
        return LeaseRefresh(key, owner.wallet, ORG_ROOT_ID, principal_id, device_id, session)

    items = [item("desktop-7f6f3a9b"), item("b"), item("c"), item("d"), item("nope"), item("b", stale), item("b")]
    items.append(item("b", principal_id="human.other"))
    with CaptureQueriesContext(connections["default"]) as queries:
        outcomes = refresh_leases(items)
    # the entitlement (the organization of the root first), then the refresh
    assert len(queries.captured_queries) == 3
    with CaptureQueriesContext(connections["default"]) as queries:
        refresh_leases([item("b")])
    assert len(queries.captured_queries) == 2  # the root's organization is kept longer
    statuses = [outcome.status for outcome in outcomes]
    assert statuses[0] == "refreshed"
    assert statuses[2:6] == ["unsettled", "unsettled", "unsettled", "session_invalid"]  # parked, installing, unknown
    # "b" twice with a session that stands: one of them refreshes it, the other is settled alone
    assert sorted([statuses[1], statuses[6]]) == ["refreshed", "unsettled"]
    assert statuses[7] == "unsettled"  # not that principal's device
    assert device("b").last_heartbeat_at is not None and device("c").last_heartbeat_at is None


@pytest.mark.postgres
def test_sessions_not_in_memory_are_looked_up_together_by_the_batch(launcher):
    owner = launcher.owner
    other = make_owner("org.other.root", "human.ada")
    make_active_device(other, "ada-box")
    other_session = open_wallet_session(APIClient(), other.account)
    sessions.clear()

    def item(secret, wallet, root=ORG_ROOT_ID, principal_id=PRINCIPAL_ID, device_id="desktop-7f6f3a9b"):
        return LeaseRefresh(SessionKey.of(secret), wallet, root, principal_id, device_id)

    items = [
        item(launcher.session, owner.wallet),
        item(other_session, other.wallet, "org.other.root", "human.ada", "ada-box"),
        item(launcher.session + "x", owner.wallet),  # not a session's secret
        item(other_session, owner.wallet),  # ada's session, for another wallet
    ]
    with CaptureQueriesContext(connections["default"]) as queries:
        outcomes = refresh_leases(items)
    # the sessions, the roots' organizations, the entitlements, the refresh
    assert len(queries.captured_queries) == 4
    assert [o.status for o in outcomes] == ["refreshed", "refreshed", "session_invalid", "wallet_mismatch"]
    assert outcomes[3].session_wallet == other.wallet
    assert sessions.cached(launcher.session) is not None and sessions.cached(other_session) is not None


def test_many_holders_entitlements_are_read_in_one_query(launcher):
    owner = launcher.owner
    other = make_owner("org.other.root", "human.ada", entitlement="inactive")
    organization, wallet = str(owner.organization.pk), owner.wallet
    pairs = [
        (organization, wallet),
        (organization, wallet.lower()),  # a wallet is a holder as stored, checksummed: not this one
        (str(other.organization.pk), other.wallet),
        (organization, other.wallet),  # holds nothing here
    ]
    with CaptureQueriesContext(connections["default"]) as queries:
        held = entitlements_of(pairs, "governance")
    assert len(queries.captured_queries) == 1
    assert [held[pair].status for pair in pairs] == ["active", "inactive", "inactive", "inactive"]
    assert held[pairs[0]].entitlement_id and held[pairs[3]].entitlement_id == ""


@pytest.mark.postgres
def test_a_hot_heartbeat_with_its_session_and_entitlement_cached_is_one_round_trip(launcher, settings):
    settings.MANDATE_HEARTBEAT_CACHE_SECONDS = 60
    request = HotRequest(
        "POST",
        HEARTBEAT_URL,
        {},
        {"authorization": f"Bearer {launcher.session}"},
        json.dumps(launcher.body()).encode(),
    )
    assert drive(HEARTBEAT, request)[0] == 200  # caches the session and the entitlement
    with CaptureQueriesContext(connections["default"]) as queries:
        status, body, headers = drive(HEARTBEAT, request)
    assert status == 200 and body["status"] == "lease_refreshed"
    assert [q["sql"].lstrip()[:4] for q in queries.captured_queries] == ["WITH"]


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_two_parkers_at_once_park_each_device_once():
    owner = make_owner()
    devices = [make_active_device(owner, f"box-{n}") for n in range(40)]
    Device.objects.update(lease_expires_at=timezone.now() - timedelta(minutes=5))
    barrier, counts, errors = threading.Barrier(2), [], []

    def park():
        try:
            barrier.wait()
            counts.append(park_expired_devices(batch_size=7))
        except Exception as exc:  # noqa: BLE001 (reported below)
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=park) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == [] and sum(counts) == 40
    assert not Device.objects.filter(availability_state=AvailabilityState.ACTIVE).exists()
    assert AuditEvent.objects.filter(event_type=PARKED_EVENT).count() == 40
    for found in devices:
        assert [e.event_type for e in device_events(found)] == [PARKED_EVENT]
    assert verify_ledger().valid


# --- the hot path in front of Django --------------------------------------------------------------


@pytest.fixture
def router():
    from governance.asgi import django_application

    with serving(django_application, [HEARTBEAT]) as route:
        assert route.routes == [HEARTBEAT]
        yield route


# Django answers this content type itself (the hot path admits only a plain one).
TO_DJANGO = 'application/json; charset="utf-8"'


def post_all(app, calls, *, together: bool = False) -> list[httpx.Response]:
    """POST each (headers, body) to the heartbeat URL through ``app``, in order or all at once."""

    async def scenario():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            posts = [client.post(HEARTBEAT_URL, headers=h, content=b) for h, b in calls]
            if together:
                return await asyncio.gather(*posts)
            return [await post for post in posts]

    return asyncio.run(scenario())


def bearer(session: str, content_type: str = "application/json") -> dict:
    return {"Authorization": f"Bearer {session}", "Content-Type": content_type}


def without_ids(answer: httpx.Response) -> tuple[int, dict, set]:
    """What must be the same on both paths: status, body (but the correlation id and the
    lease's second), headers (names; the values but the correlation id's)."""
    body = answer.json()
    body.pop("correlation_id", None)
    if "lease_expires_at" in body:
        body["lease_expires_at"] = body["lease_expires_at"][:16]  # to the minute
    headers = {
        (name, value) for name, value in answer.headers.items() if name not in ("x-correlation-id", "content-length")
    }
    headers.add(("x-correlation-id", bool(CORRELATION_ID.match(answer.headers["x-correlation-id"]))))
    return answer.status_code, body, headers


ALIKE_CASES = {
    "refreshed": ({}, "desktop-7f6f3a9b"),
    "invalid_request": ({"extra": 1}, "desktop-7f6f3a9b"),
    "wallet_mismatch": ({"wallet": "0x" + "ab" * 20}, "desktop-7f6f3a9b"),
    "organization_not_found": ({"org_root_id": "org.none"}, "desktop-7f6f3a9b"),
    "principal_not_found": ({"principal_id": "human.none"}, "desktop-7f6f3a9b"),
    "device_not_found": ({}, "laptop-none"),
    "device_not_installed": ({}, "half-installed"),
}


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("case", ALIKE_CASES)
def test_the_hot_path_and_django_answer_alike(router, django_requests, case):
    changes, device_id = ALIKE_CASES[case]
    owner = make_owner()
    make_active_device(owner)
    make_active_device(owner, "half-installed", install_state=InstallState.DOWNLOADED)
    launcher = launcher_for(owner)
    body = json.dumps(launcher.body(device_id, **changes)).encode()
    django_requests.clear()
    hot, drf = post_all(router, [(bearer(launcher.session), body), (bearer(launcher.session, TO_DJANGO), body)])
    assert django_requests == [HEARTBEAT_URL]  # only the second went through Django
    assert without_ids(hot) == without_ids(drf)
    assert hot.headers["x-correlation-id"] != drf.headers["x-correlation-id"]
    if hot.status_code != 200:
        assert hot.json()["code"] == case
        assert hot.json()["correlation_id"] == hot.headers["x-correlation-id"]


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_the_hot_paths_log_line_carries_the_correlation_id(router, caplog):
    owner = make_owner()
    make_active_device(owner)
    launcher = launcher_for(owner)
    with caplog.at_level("INFO", logger="mandate.request"):
        (answer,) = post_all(router, [(bearer(launcher.session), json.dumps(launcher.body()).encode())])
    assert answer.status_code == 200
    lines = [r for r in caplog.records if r.name == "mandate.request" and getattr(r, "path", "") == HEARTBEAT_URL]
    assert [r.correlation_id for r in lines] == [answer.headers["x-correlation-id"]]


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_the_hot_path_and_django_answer_a_missing_session_alike(router, django_requests):
    owner = make_owner()
    make_active_device(owner)
    body = json.dumps(Launcher(owner, "").body()).encode()
    calls = [({"Content-Type": "application/json"}, body), ({"Content-Type": TO_DJANGO}, body)]
    hot, drf = post_all(router, calls)
    assert without_ids(hot) == without_ids(drf)
    assert hot.status_code == 401 and hot.headers["www-authenticate"] == 'Bearer realm="mandate"'


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_revoked_wallet_session_is_refused_even_when_the_hot_path_has_it_cached(router, django_requests):
    owner = make_owner()
    make_active_device(owner)
    launcher = launcher_for(owner)
    plain = json.dumps(launcher.body()).encode()
    unknown_device = json.dumps(launcher.body("laptop-none")).encode()
    django_requests.clear()
    (first,) = post_all(router, [(bearer(launcher.session), plain)])
    assert first.status_code == 200 and sessions.cached(launcher.session) is not None
    lease = device().lease_expires_at
    revoke_wallet_session(WalletSession.objects.get())
    refreshed, refused = post_all(
        router, [(bearer(launcher.session), plain), (bearer(launcher.session), unknown_device)]
    )
    refusal(refreshed, 401, "wallet_session_invalid")
    refusal(refused, 401, "wallet_session_invalid")  # not 404: the session is gone first
    assert django_requests == []  # the hot path answered them all
    assert sessions.cached(launcher.session) is None
    assert device().lease_expires_at == lease


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_parked_device_revives_once_however_many_heartbeats_arrive_together(router):
    owner = make_owner()
    boxes = [make_active_device(owner, f"box-{n}") for n in range(5)]
    launcher = launcher_for(owner)
    Device.objects.update(lease_expires_at=timezone.now() - timedelta(minutes=1))
    assert park_expired_devices() == 5
    calls = [(bearer(launcher.session), json.dumps(launcher.body(box.device_id)).encode()) for box in boxes] * 4
    answers = post_all(router, calls, together=True)
    assert [a.status_code for a in answers] == [200] * 20, [a.content for a in answers if a.status_code != 200]
    assert not Device.objects.exclude(availability_state=AvailabilityState.ACTIVE).exists()
    for box in boxes:
        assert [e.event_type for e in device_events(box)] == [PARKED_EVENT, REVIVED_EVENT]
        assert verify_chain(device_chain_id(box)).valid
    assert verify_ledger().valid


# --- real parallel heartbeats: two server processes on PostgreSQL --------------------------------------


def in_parallel(urls: list[str], calls: list[tuple[str, dict]]) -> list[httpx.Response]:
    """Every (session, body) POSTed at once, alternately to each server; the answers in order."""

    async def scenario():
        clients = [httpx.AsyncClient(base_url=url, timeout=60) for url in urls]
        try:
            posts = [
                clients[n % len(clients)].post(HEARTBEAT_URL, json=body, headers={"Authorization": f"Bearer {session}"})
                for n, (session, body) in enumerate(calls)
            ]
            return await asyncio.gather(*posts)
        finally:
            for client in clients:
                await client.aclose()

    return asyncio.run(scenario())


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_parallel_heartbeats_on_two_servers_refresh_every_lease_and_revive_each_parked_device_once():
    owners = [make_owner(f"org.fleet{n}.root", "human.owner") for n in range(3)]
    launchers = [launcher_for(owner) for owner in owners]
    fleet = {launcher: [make_active_device(launcher.owner, f"box-{n}") for n in range(40)] for launcher in launchers}
    parked = [boxes[0] for boxes in fleet.values()]
    Device.objects.filter(pk__in=[box.pk for box in parked]).update(
        lease_expires_at=timezone.now() - timedelta(minutes=1)
    )
    assert park_expired_devices() == 3
    Device.objects.exclude(availability_state=AvailabilityState.PARKED).update(
        lease_expires_at=timezone.now() + timedelta(hours=1)
    )
    started = timezone.now().replace(microsecond=0)
    calls = [(owner.session, owner.body(box.device_id)) for owner, boxes in fleet.items() for box in boxes] * 2
    calls += [(launchers[0].session, launchers[0].body("box-unknown"))] * 4
    with (
        server(database_url_named("hb-a")) as first,
        server(database_url_named("hb-b")) as second,
    ):
        answers = in_parallel([first.url, second.url], calls)
    statuses = [a.status_code for a in answers]
    assert statuses == [200] * 240 + [404] * 4, [a.content for a in answers if a.status_code not in (200, 404)]
    assert {a.json()["code"] for a in answers[240:]} == {"device_not_found"}
    for answer in answers:
        assert CORRELATION_ID.match(answer.headers["x-correlation-id"])
    assert not Device.objects.exclude(availability_state=AvailabilityState.ACTIVE).exists()
    assert not Device.objects.filter(lease_expires_at__lt=started + timedelta(days=LEASE_DAYS)).exists()
    assert not Device.objects.filter(last_heartbeat_at__lt=started).exists()
    assert not Device.objects.filter(last_heartbeat_at__isnull=True).exists()
    assert AuditEvent.objects.filter(event_type=REVIVED_EVENT).count() == 3
    for box in parked:
        assert [e.event_type for e in device_events(box)] == [PARKED_EVENT, REVIVED_EVENT]
    assert verify_ledger().valid


def test_a_heartbeat_never_shortens_a_longer_lease(launcher):
    """A device renewed offline for a year keeps that year when it heartbeats again."""
    renewed_until = (timezone.now() + timedelta(days=365)).replace(microsecond=0)
    Device.objects.update(lease_expires_at=renewed_until, access_class=AccessClass.OFFLINE)
    answer = launcher.heartbeat()
    assert answer.status_code == 200, answer.content
    assert answer.json()["lease_expires_at"] == renewed_until.isoformat().replace("+00:00", "Z")
    assert device().lease_expires_at == renewed_until
    assert device().access_class == AccessClass.CONNECTED


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_the_hot_path_never_shortens_a_longer_lease_either(router):
    owner = make_owner()
    renewed_until = (timezone.now() + timedelta(days=365)).replace(microsecond=0)
    make_active_device(owner, lease_expires_at=renewed_until)
    launcher = launcher_for(owner)
    (hot,) = post_all(router, [(bearer(launcher.session), json.dumps(launcher.body()).encode())])
    assert hot.status_code == 200, hot.content
    assert hot.json()["lease_expires_at"] == renewed_until.isoformat().replace("+00:00", "Z")
    assert device().lease_expires_at == renewed_until
