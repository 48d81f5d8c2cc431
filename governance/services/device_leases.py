"""Availability leases: heartbeats keep a device's lease alive, the beat task parks devices
whose lease ran out, and a heartbeat revives a parked device while the governance
entitlement is active (edut's ``/governance/lease/heartbeat``; docs/device_leases.md).

Heartbeats are on the hot path (``governance/api/device_leases.py``), so ``heartbeat`` is a
generator of hot path steps that does no I/O itself. The wallet session comes from this
process's memory, and so does the governance entitlement when it was found active at most
``MANDATE_HEARTBEAT_CACHE_SECONDS`` ago (it belongs to another app); the group commit's
recorder reads the sessions and entitlements its batch lacks, each kind in one query, then one
UPDATE re-checks everything identity owns (the session, the principal in its root, the
ownership wallet, the membership, the device) and refreshes the leases. What it did not
refresh is settled alone (``settle_heartbeat``): every rule read afresh, in edut's order,
under the device's row lock, and a parked device revived.
Parking and reviving are events on the device's hash chain; a plain refresh writes none.
"""

import functools
import json
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Value
from django.db.models.functions import Coalesce, Greatest
from django.utils import timezone

from governance.choices import (
    AccessClass,
    AvailabilityState,
    InstallState,
    MembershipStatus,
    TokenStatus,
    WalletPurpose,
)
from governance.group_commit import prepared_cursor
from governance.hot_steps import InThread, Write
from governance.install_ports import entitlements_of, record_device_event
from governance.models import Device, Organization, Principal, WalletSession
from governance.secret_hashing import hash_secret
from governance.services.install_rules import (
    InstallRefused,
    device_chain_id,
    entitlement_active,
    identifier_value,
    invalid,
    membership_active,
    owns,
    principal_in_root,
    same_wallet,
    wallet_value,
)
from governance.services.wallet_sessions import SESSION_SCHEME
from governance.timestamps import rfc3339_isoformat
from governance.token_cache import CachedWalletSession, WalletSessionCache

HEARTBEAT_FIELDS = ("wallet", "org_root_id", "principal_id", "device_id")
REVIVED_EVENT = "lease.revived"
PARKED_EVENT = "lease.parked"
PARK_BATCH = 500

# Outcomes of the batch statement, per heartbeat.
REFRESHED = "refreshed"
SESSION_INVALID = "session_invalid"
WALLET_MISMATCH = "wallet_mismatch"  # the session stands, for another wallet
UNSETTLED = "unsettled"  # not refreshed: settled alone (``settle_heartbeat``)

sessions = WalletSessionCache()


def session_invalid() -> InstallRefused:
    return InstallRefused("wallet_session_invalid", "invalid, expired or revoked wallet session")


def wallet_session_secret(authorization: str | None) -> str | None:
    """The secret of ``Authorization: Bearer mws_...``, else None."""
    scheme, _, secret = (authorization or "").partition(" ")
    secret = secret.strip()
    if scheme.lower() != "bearer" or not secret.startswith(f"{SESSION_SCHEME}_"):
        return None
    return secret


@dataclass(frozen=True)
class SessionKey:
    """How a wallet session is found without its secret: the prefix (unique) and the
    SHA-256 of the secret (compared in constant time)."""

    prefix: str
    secret_hash: str

    @classmethod
    def of(cls, secret: str) -> "SessionKey | None":
        parts = secret.split("_", 2)
        if len(parts) != 3 or parts[0] != SESSION_SCHEME or not parts[1]:
            return None
        return cls(parts[1], hash_secret(secret))


def lease_until(now: datetime) -> datetime:
    """A lease taken at ``now``: ``MANDATE_DEVICE_LEASE_SECONDS`` on, in whole seconds (as
    the wire shows it)."""
    return (now + timedelta(seconds=settings.MANDATE_DEVICE_LEASE_SECONDS)).replace(microsecond=0)


# A launcher sends the same wallet with every heartbeat: its checksum (a Keccak hash) is
# worked out once per process.
_checksummed = functools.lru_cache(maxsize=65_536)(wallet_value)


@dataclass(frozen=True)
class HeartbeatRequest:
    wallet: str  # EIP-55 checksummed
    org_root_id: str
    principal_id: str
    device_id: str

    @classmethod
    def of(cls, data) -> "HeartbeatRequest":
        """The request in a parsed body: exactly edut's four fields."""
        if not isinstance(data, dict):
            raise invalid("body", "must be a JSON object")
        unknown = sorted(set(data) - set(HEARTBEAT_FIELDS))
        if unknown:
            raise invalid(unknown[0], "is not a field of a heartbeat")
        missing = [name for name in HEARTBEAT_FIELDS if name not in data]
        if missing:
            raise invalid(missing[0], "this field is required")
        return cls(
            wallet=_checksummed(data["wallet"]) if isinstance(data["wallet"], str) else wallet_value(data["wallet"]),
            org_root_id=identifier_value(data["org_root_id"], "org_root_id"),
            principal_id=identifier_value(data["principal_id"], "principal_id"),
            device_id=identifier_value(data["device_id"], "device_id"),
        )


@dataclass(frozen=True)
class LeaseRefreshed:
    lease_expires_at: datetime
    revived: bool


# --- the governance entitlement, cached ------------------------------------------------------------


@dataclass(frozen=True)
class Holding:
    """Whether a wallet holds an active governance entitlement in an organization root (and
    the root's organization, "" when there is none), as read at ``loaded_at``."""

    organization_id: str
    active: bool
    loaded_at: float


# An organization root's organization, kept longer than a holding: the refresh statement
# re-checks the pair, so a root id moved to another organization is settled afresh.
ROOT_SECONDS = 300.0


class HoldingCache:
    """Holdings by (org root, wallet). An active one is relied on for at most
    ``MANDATE_HEARTBEAT_CACHE_SECONDS``: an entitlement that turns inactive stops heartbeats
    within that time in every process. One that is not active is never relied on: the
    heartbeat is settled with everything read afresh (``settle_heartbeat``)."""

    def __init__(self, max_entries: int = 100_000):
        self.max_entries = max_entries
        self._entries: OrderedDict[tuple, Holding] = OrderedDict()
        self._roots: dict[str, tuple[str, float]] = {}
        self._lock = threading.Lock()

    def fresh(self, org_root_id: str, wallet: str) -> Holding | None:
        """The holding if it was read recently enough (no query), else None."""
        entry = self._entries.get((org_root_id, wallet))
        if entry is not None and time.monotonic() - entry.loaded_at < settings.MANDATE_HEARTBEAT_CACHE_SECONDS:
            return entry
        return None

    def read(self, keys: list[tuple[str, str]]) -> dict[tuple[str, str], Holding]:
        """The holdings of (org root, wallet) pairs as the database says now, kept: one query
        for all of them (two when a root was not seen lately)."""
        started = time.monotonic()
        roots = self._organizations({root for root, _ in keys})
        known = [(roots[root], wallet) for root, wallet in keys if roots[root]]
        held = entitlements_of(known, settings.MANDATE_GOVERNANCE_PLAN_ID) if known else {}
        read = {
            (root, wallet): Holding(
                roots[root], bool(roots[root]) and held[(roots[root], wallet)].status == "active", started
            )
            for root, wallet in keys
        }
        with self._lock:
            for key, entry in read.items():
                self._entries[key] = entry
                self._entries.move_to_end(key)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)
        return read

    def _organizations(self, roots: set[str]) -> dict[str, str]:
        """The organization id of each root ("" for a root no organization has)."""
        now = time.monotonic()
        found = {root: known[0] for root in roots if (known := self._roots.get(root)) and now - known[1] < ROOT_SECONDS}
        missing = roots - set(found)
        if missing:
            rows = dict(Organization.objects.filter(org_root_id__in=missing).values_list("org_root_id", "pk"))
            with self._lock:
                if len(self._roots) > self.max_entries:
                    self._roots.clear()
                for root, organization_id in rows.items():
                    self._roots[root] = (str(organization_id), now)
            found.update({root: str(rows[root]) if root in rows else "" for root in missing})
        return found

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._roots.clear()


holdings = HoldingCache()


# --- the refresh: one statement for a batch -----------------------------------------------------


@dataclass(frozen=True)
class LeaseRefresh:
    """One heartbeat to write: the request, and its wallet session and the holding of
    (root, wallet) when they were in memory (else the recorder reads them, with the others of
    its batch)."""

    key: SessionKey
    wallet: str
    org_root_id: str
    principal_id: str
    device_id: str
    session: CachedWalletSession | None = None
    holding: Holding | None = None

    def session_now(self) -> CachedWalletSession | None:
        """The session, if it stands now (one query; a session not in memory is looked up)."""
        session = self.session or sessions.load_many({self.key.secret_hash: self.key.prefix}).get(self.key.secret_hash)
        return session if session is not None and session_stands(session.session_id) else None


@dataclass(frozen=True)
class Refresh:
    status: str  # REFRESHED, SESSION_INVALID, WALLET_MISMATCH or UNSETTLED
    lease_expires_at: datetime | None = None
    session_wallet: str = ""  # WALLET_MISMATCH: the session's


# The statement re-checks what identity owns: the session, the organization of the root, the
# principal in it and its membership, the wallet as one of its ownership wallets, the device
# installed and active.
# Each item finds its session by its primary key and its device by the unique (wallet,
# device_id) index (lateral joins: index probes, however large the tables); the devices are then
# locked in id order, so two batches naming the same devices never deadlock, and re-checked
# under the lock (a device parked meanwhile no longer matches: it is settled alone).
REFRESH_SQL = """
WITH item AS (
    SELECT * FROM jsonb_to_recordset(%s::jsonb) AS i(
        n int, session_id uuid, wallet text, org_root_id text, principal_id text, device_id text, organization_id uuid
    )
), standing AS (
    SELECT item.*, session.id IS NOT NULL AS session_ok
    FROM item LEFT JOIN LATERAL (
        SELECT s.id FROM governance_walletsession s
        WHERE s.id = item.session_id AND s.status = %s AND s.expires_at > %s
        LIMIT 1  -- kept a lateral probe: the planner, expecting 100 items, would scan the table
    ) session ON true
), target AS (
    SELECT found.id, standing.n
    FROM standing CROSS JOIN LATERAL (
        SELECT d.id
        FROM governance_organization o
        JOIN governance_principal p ON p.organization_id = o.id
        JOIN governance_device d
            ON d.principal_id = p.id AND d.wallet = standing.wallet AND d.device_id = standing.device_id
        WHERE o.id = standing.organization_id AND o.org_root_id = standing.org_root_id
            AND p.principal_id = standing.principal_id AND p.membership_status = %s
            AND EXISTS (
                SELECT 1 FROM governance_principalwallet w
                WHERE w.principal_id = p.id AND w.address = standing.wallet AND w.purpose = %s
            )
        LIMIT 1  -- (unique anyway) a lateral probe, as above
    ) found
    WHERE standing.session_ok
), locked AS (
    SELECT mine.id
    FROM (SELECT DISTINCT id FROM target ORDER BY id) ordered CROSS JOIN LATERAL (
        SELECT d.id FROM governance_device d
        WHERE d.id = ordered.id AND d.install_state = %s AND d.availability_state = %s
        FOR UPDATE
    ) mine
), refreshed AS (
    UPDATE governance_device d
    SET lease_expires_at = GREATEST(d.lease_expires_at, %s), last_heartbeat_at = %s, access_class = %s,
        updated_at = %s
    FROM locked JOIN target ON target.id = locked.id
    WHERE d.id = locked.id
    RETURNING target.n, d.lease_expires_at
)
SELECT standing.n, standing.session_ok, refreshed.n IS NOT NULL, refreshed.lease_expires_at
FROM standing LEFT JOIN refreshed ON refreshed.n = standing.n
ORDER BY standing.n
"""


def refresh_leases(items: list[LeaseRefresh]) -> list[Refresh]:
    """Refresh the lease of each item's device when its session stands for its wallet, the
    wallet's governance entitlement is active and identity's rules hold; one outcome per
    item, in order. The hot path's recorder: the sessions and holdings not in memory are read
    first, each kind together (one query), then on PostgreSQL one statement for the batch."""
    unknown = {item.key.secret_hash: item.key.prefix for item in items if item.session is None}
    found = sessions.load_many(unknown) if unknown else {}
    session_of = [item.session or found.get(item.key.secret_hash) for item in items]
    outcomes = [  # overwritten below for the items that go on
        Refresh(SESSION_INVALID) if session is None else Refresh(WALLET_MISMATCH, session_wallet=session.wallet)
        for session in session_of
    ]
    candidates = [
        n for n, session in enumerate(session_of) if session is not None and session.wallet == items[n].wallet
    ]
    unread = list({(items[n].org_root_id, items[n].wallet) for n in candidates if items[n].holding is None})
    read = holdings.read(unread) if unread else {}
    held = {n: items[n].holding or read[(items[n].org_root_id, items[n].wallet)] for n in candidates}
    going = [n for n in candidates if held[n].active]
    for n in candidates:
        outcomes[n] = Refresh(UNSETTLED)  # an inactive entitlement, unless refreshed below: settled afresh
    if not going:
        return outcomes
    now = timezone.now()
    lease = lease_until(now)
    if connection.vendor != "postgresql":
        for n in going:
            outcomes[n] = _refresh_one(items[n], session_of[n].session_id, held[n].organization_id, now, lease)
        return outcomes
    payload = json.dumps(
        [
            {
                "n": n,
                "session_id": session_of[n].session_id,
                "wallet": items[n].wallet,
                "org_root_id": items[n].org_root_id,
                "principal_id": items[n].principal_id,
                "device_id": items[n].device_id,
                "organization_id": held[n].organization_id,
            }
            for n in going
        ]
    )
    parameters = [payload, TokenStatus.ACTIVE, now, MembershipStatus.ACTIVE, WalletPurpose.OWNERSHIP]
    parameters += [InstallState.ACTIVE, AvailabilityState.ACTIVE, lease, now, AccessClass.CONNECTED, now]
    with prepared_cursor() as cursor:
        cursor.execute(REFRESH_SQL, parameters)
        for n, session_ok, refreshed, lease_expires_at in cursor.fetchall():
            outcomes[n] = _outcome(session_ok, refreshed, lease_expires_at)
    return outcomes


def _outcome(session_ok: bool, refreshed: bool, lease: datetime) -> Refresh:
    if refreshed:
        return Refresh(REFRESHED, lease)
    return Refresh(UNSETTLED if session_ok else SESSION_INVALID)


@transaction.atomic
def _refresh_one(item: LeaseRefresh, session_id: str, organization_id: str, now: datetime, lease: datetime) -> Refresh:
    """The statement's work for one item through the ORM (SQLite)."""
    if not session_stands(session_id, now):
        return Refresh(SESSION_INVALID)
    standing = Principal.objects.filter(
        organization_id=organization_id,
        organization__org_root_id=item.org_root_id,
        principal_id=item.principal_id,
        membership_status=MembershipStatus.ACTIVE,
        wallets__address=item.wallet,
        wallets__purpose=WalletPurpose.OWNERSHIP,
    )
    refreshed = Device.objects.filter(
        principal__in=standing,
        wallet=item.wallet,
        device_id=item.device_id,
        install_state=InstallState.ACTIVE,
        availability_state=AvailabilityState.ACTIVE,
    )
    updated = refreshed.update(
        lease_expires_at=Greatest(Coalesce("lease_expires_at", Value(lease)), Value(lease)),
        last_heartbeat_at=now,
        access_class=AccessClass.CONNECTED,
        updated_at=now,
    )
    if not updated:
        return _outcome(True, False, None)
    return _outcome(True, True, refreshed.values_list("lease_expires_at", flat=True).first())


def standing_session(key: SessionKey, session: CachedWalletSession | None) -> CachedWalletSession | None:
    """The session of ``key`` if it stands now (``session``: what memory held of it; one
    query, two when memory held nothing)."""
    found = session or sessions.load_many({key.secret_hash: key.prefix}).get(key.secret_hash)
    return found if found is not None and session_stands(found.session_id) else None


def session_stands(session_id: str, now: datetime | None = None) -> bool:
    """The wallet session is active and unexpired."""
    return WalletSession.objects.filter(
        pk=session_id, status=TokenStatus.ACTIVE, expires_at__gt=now or timezone.now()
    ).exists()


def settle_heartbeat(item: LeaseRefresh) -> LeaseRefreshed:
    """A heartbeat the statement did not refresh, alone, every rule read afresh in edut's
    order (session, principal in root, ownership wallet, membership, entitlement, device
    known, installed), under the device's row lock; a parked device is revived, with an
    event on its chain."""
    with transaction.atomic():
        session = item.session_now()
        if session is None:
            raise session_invalid()
        same_wallet(session.wallet, item.wallet)
        principal = principal_in_root(item.org_root_id, item.principal_id)
        owns(principal, item.wallet)
        membership_active(principal)
        held = entitlement_active(principal, item.wallet)
        device = (
            Device.objects.select_for_update()
            .filter(principal=principal, wallet=item.wallet, device_id=item.device_id)
            .first()
        )
        if device is None:
            raise InstallRefused(
                "device_not_found", f"no device {item.device_id} of this wallet, organization root and principal"
            )
        if device.install_state != InstallState.ACTIVE:
            raise InstallRefused("device_not_installed", f"the device's install state is {device.install_state}")
        revived = device.availability_state == AvailabilityState.PARKED
        now = timezone.now()
        device.lease_expires_at = max(lease_until(now), device.lease_expires_at or now)
        device.last_heartbeat_at = now
        device.access_class = AccessClass.CONNECTED
        device.availability_state = AvailabilityState.ACTIVE
        device.save(
            update_fields=["lease_expires_at", "last_heartbeat_at", "access_class", "availability_state", "updated_at"]
        )
        if revived:
            record_device_event(
                device_chain_id(device),
                REVIVED_EVENT,
                {
                    "device_id": device.device_id,
                    "wallet": item.wallet,
                    "entitlement_id": held.entitlement_id,
                    "lease_expires_at": rfc3339_isoformat(device.lease_expires_at),
                },
                item.wallet,
            )
    return LeaseRefreshed(device.lease_expires_at, revived)


# --- the heartbeat, as hot path steps ------------------------------------------------------------


def heartbeat(secret: str | None, read_body: Callable[[], object]):
    """One heartbeat as hot path steps (``governance.hotpath``): the wallet session of
    ``secret`` (from memory, else the recorder's), the request ``read_body()`` gives (the
    edge's parser: it raises ``invalid_request``), the holding, the refresh. Returns
    ``LeaseRefreshed``; raises ``InstallRefused``.

    A refusal is the answer only while the session stands: a session revoked since it was
    cached is ``wallet_session_invalid`` on the next request, whatever else is wrong."""
    key = SessionKey.of(secret) if secret is not None else None
    if key is None:
        raise session_invalid()
    session = sessions.cached_by_hash(key.secret_hash)
    try:
        request = HeartbeatRequest.of(read_body())
        if session is not None:
            same_wallet(session.wallet, request.wallet)
        holding = holdings.fresh(request.org_root_id, request.wallet)
        item = LeaseRefresh(
            key, request.wallet, request.org_root_id, request.principal_id, request.device_id, session, holding
        )
        if holding is not None and not holding.active:
            return (yield InThread(settle_heartbeat, item))  # refused, or reads it active now
        refresh = yield Write(item)
        if refresh.status == SESSION_INVALID:
            raise session_invalid()
        if refresh.status == WALLET_MISMATCH:
            same_wallet(refresh.session_wallet, request.wallet)
        if refresh.status == REFRESHED:
            return LeaseRefreshed(refresh.lease_expires_at, revived=False)
        return (yield InThread(settle_heartbeat, item))
    except InstallRefused as refused:
        if refused.code == "wallet_session_invalid" or not (yield InThread(_stands, key, session)):
            sessions.drop(secret)
            raise session_invalid() from None
        raise


def _stands(key: SessionKey, session: CachedWalletSession | None) -> bool:
    return standing_session(key, session) is not None


# --- parking -----------------------------------------------------------------------------------


def park_expired_devices(now: datetime | None = None, batch_size: int = PARK_BATCH) -> int:
    """Park every active device whose lease expired before ``now``, each with an event on its
    chain; how many. Safe to run in several workers at once: each takes its devices with
    ``SKIP LOCKED`` and re-checks them under the lock, so none is parked (or logged) twice,
    and a device a heartbeat holds is left to it (refreshed, it is no longer expired)."""
    now = now or timezone.now()
    parked = 0
    while True:
        with transaction.atomic():
            expired = list(
                Device.objects.select_for_update(skip_locked=True)
                .filter(availability_state=AvailabilityState.ACTIVE, lease_expires_at__lt=now)
                .order_by("lease_expires_at", "id")
                .values("id", "device_id", "wallet", "lease_expires_at")[:batch_size]
            )
            if not expired:
                return parked
            Device.objects.filter(pk__in=[row["id"] for row in expired]).update(
                availability_state=AvailabilityState.PARKED, updated_at=now
            )
            for row in expired:
                record_device_event(
                    device_chain_id(Device(pk=row["id"])),
                    PARKED_EVENT,
                    {
                        "device_id": row["device_id"],
                        "wallet": row["wallet"],
                        "lease_expired_at": rfc3339_isoformat(row["lease_expires_at"]),
                    },
                    "mandate",
                    performer_type="system",
                )
        parked += len(expired)
        if len(expired) < batch_size:
            return parked
