"""The one decision path: every decision on every envelope, from every entry.

The inbox, ``POST /v1/reviews``, bulk acknowledge, the timeout sweeper and an agent's
superseding card all call :func:`decide` (or :func:`decide_many`). It locks the envelopes,
hands each to the rules of its kind (registered by the capability package that owns the
kind: ``evaluation`` for escalated evaluations, ``requests`` for agents' requests), and
finalises once what they decided: state through the state machine, hash-chained evidence,
outbox rows, and a notification to whoever waits. No entry decides around the rules.

Set-based, so a batch costs about as many statements as one decision: the envelopes are
locked in one query, each kind loads its rows in a few, every chain's events are linked
into the ledger by one statement, and the rows are written in bulk.
"""

import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from django.db import transaction
from django.utils import timezone

from envelopes.choices import EnvelopeState
from envelopes.models import Envelope
from envelopes.state import check_transition
from evidence.services.chain import EventDraft, draft_rows, store_rows
from governance.bulk import update_rows
from governance.errors import Conflict, DomainError, NotFound


@dataclass(frozen=True)
class Actor:
    """Who decides: a person (with the roles they hold), the system, or an agent's channel."""

    kind: str  # "user", "system" or "channel": the evidence's performer_type
    id: str  # the evidence's performer_id: a username, "mandate", a channel id
    person: Any = None
    roles: frozenset = frozenset()
    # The person's teams ({team id: owns it}) when the caller read them once for many
    # refusals (a page of cards); None: the rules ask when they need to.
    teams: Mapping[str, bool] | None = None

    @classmethod
    def of_person(cls, person, roles: Iterable[str] | None = None, teams: Mapping[str, bool] | None = None) -> "Actor":
        from governance.services.people import person_roles

        held = frozenset(roles) if roles is not None else person_roles(person)
        return cls("user", person.get_username(), person, held, teams)

    @classmethod
    def channel(cls, channel_id) -> "Actor":
        return cls("channel", str(channel_id))

    @property
    def performer(self) -> tuple[str, str]:
        return self.kind, self.id


SYSTEM = Actor("system", "mandate")


@dataclass(frozen=True)
class Decision:
    """What the actor does: ``approve``, ``reject``, ``acknowledge``, ``choose``, ``answer``,
    ``request_changes``, ``withdraw_tweak``, ``timeout``, ``supersede`` (which a kind
    accepts is its rules' business)."""

    action: str
    comment: str = ""
    choice: Any = None
    input_text: str = ""
    detail: dict = field(default_factory=dict)


@dataclass
class Verdict:
    """What a kind's rules decided about one envelope, for the core to finalise."""

    result: str  # for the edge: "approved", "rejected", "recorded", ...
    events: list[EventDraft] = field(default_factory=list)
    closes: bool = False
    deliveries: list[tuple[str, dict]] = field(default_factory=list)  # (event, payload) for the outbox


class KindRules(Protocol):
    kind: str
    envelope_fields: tuple[str, ...]  # the Envelope fields ``apply`` may change

    def load(self, envelopes: Sequence[Envelope]) -> dict:
        """The kind's rows of these locked envelopes, locked too, by envelope id."""

    def refusal(self, subject, actor: Actor, decision: Decision) -> DomainError | None:
        """Why ``actor`` may not take ``decision`` on ``subject`` now; None when they may."""

    def apply(self, subject, actor: Actor, decision: Decision, now) -> Verdict:
        """Take the decision on ``subject`` in memory. A DomainError must be raised before
        anything is changed (no savepoint per item: the batch stays cheap)."""

    def save(self, subjects: Sequence, now) -> None:
        """Write what ``apply`` changed (in bulk)."""


_RULES: dict[str, KindRules] = {}
_outbox: list[Callable[[list[tuple[Any, str, dict]]], None]] = []
_notifiers: list[Callable[[list[str]], None]] = []


def register_kind(rules: KindRules) -> None:
    _RULES[rules.kind] = rules


def connect_outbox(enqueue: Callable[[list[tuple[Any, str, dict]]], None]) -> None:
    """``enqueue([(subject, event, payload), ...])`` writes outbox rows in the transaction."""
    if enqueue not in _outbox:
        _outbox.append(enqueue)


def connect_notifier(notify: Callable[[list[str]], None]) -> None:
    """``notify(keys)`` runs after the commit: the ids of the envelopes that changed or arrived,
    and their organization's ``organization_key`` (long-poll waiters wait for an id, live
    inbox pages for their organization's key)."""
    if notify not in _notifiers:
        _notifiers.append(notify)


def organization_key(organization_id) -> str:
    """What the notifiers hear, beside the envelopes' ids, when an envelope of the organization
    arrives or changes."""
    return f"organization:{organization_id}"


def announce(organization_id, envelope_ids: Iterable) -> None:
    """Tell the notifiers that these envelopes of the organization arrived or changed. Call it
    once they are committed (``announce_on_commit`` inside a transaction): whoever is told
    reads the database next."""
    keys = [*(str(envelope_id) for envelope_id in envelope_ids), organization_key(organization_id)]
    for notify in _notifiers:
        notify(keys)


def announce_on_commit(organization_id, envelope_ids: Iterable) -> None:
    """``announce`` after the current transaction commits (at once outside one)."""
    ids = [str(envelope_id) for envelope_id in envelope_ids]
    transaction.on_commit(lambda: announce(organization_id, ids))


@dataclass
class Outcome:
    """One decision's answer: the envelope and what happened, or why not."""

    envelope: Envelope | None
    subject: Any = None
    verdict: Verdict | None = None
    error: DomainError | None = None


def decide(organization_id, envelope_id, actor: Actor, decision: Decision, *, kind=None, now=None) -> Outcome:
    """Decide one envelope; raise the refusal as a DomainError."""
    (outcome,) = decide_many(organization_id, [(envelope_id, actor, decision)], kind=kind, now=now)
    if outcome.error is not None:
        raise outcome.error
    return outcome


def refusal(kind: str, subject, actor: Actor, decision: Decision) -> DomainError | None:
    """Why ``actor`` may not take ``decision`` on ``subject`` (an envelope of ``kind``, as its
    rules load it) now; None when they may. Pages ask it to explain disabled buttons."""
    if kind not in _RULES:
        return Conflict(f"{kind} envelopes are not decided by people")
    return _RULES[kind].refusal(subject, actor, decision)


@transaction.atomic
def decide_many(organization_id, items: Sequence[tuple[Any, Actor, Decision]], *, kind=None, now=None) -> list[Outcome]:
    """Decide a batch, each item on its own: one refused item does not stop the others.
    Items on the same envelope apply in order. ``kind``: the only kind this entry decides
    (an envelope of another kind is not found); ``now``: the decision time (default: now)."""
    now = now or timezone.now()
    ids = [_uuid_or_none(envelope_id) for envelope_id, _, _ in items]
    kinds = {"kind": kind} if kind else {}
    envelopes = {
        e.pk: e
        for e in Envelope.objects.select_for_update()
        .filter(organization_id=organization_id, pk__in=[i for i in ids if i is not None], **kinds)
        .order_by("pk")
    }
    subjects: dict = {}
    for present in {e.kind for e in envelopes.values()} & _RULES.keys():
        subjects.update(_RULES[present].load([e for e in envelopes.values() if e.kind == present]))

    outcomes, drafts_by_envelope, deliveries = [], {}, []
    for envelope_pk, (_, actor, decision) in zip(ids, items, strict=True):
        envelope = envelopes.get(envelope_pk)
        if envelope is None:
            outcomes.append(Outcome(None, error=NotFound("envelope not found")))
            continue
        subject = subjects.get(envelope.pk)
        try:
            error = refusal(envelope.kind, subject, actor, decision)
            if error is not None:
                raise error
            verdict = _RULES[envelope.kind].apply(subject, actor, decision, now)
        except DomainError as exc:
            outcomes.append(Outcome(envelope, subject, error=exc))
            continue
        if verdict.events or verdict.closes:  # "unchanged" writes nothing
            drafts_by_envelope.setdefault(envelope.pk, []).extend(verdict.events)
        if verdict.closes:
            envelope.state = check_transition(envelope.state, EnvelopeState.CLOSED)
            envelope.closed_at = now
            drafts_by_envelope[envelope.pk].append(
                EventDraft("ENVELOPE_CLOSED", {"state": EnvelopeState.CLOSED}, *actor.performer, now)
            )
        deliveries.extend((subject, event, payload) for event, payload in verdict.deliveries)
        outcomes.append(Outcome(envelope, subject, verdict))

    if drafts_by_envelope:
        _finalise([envelopes[pk] for pk in drafts_by_envelope], drafts_by_envelope, subjects, deliveries, now)
    return outcomes


def _finalise(envelopes: list[Envelope], drafts_by_envelope: dict, subjects: dict, deliveries, now) -> None:
    """Evidence, rows, outbox and notification for every envelope that changed."""
    rows = []
    for envelope in envelopes:
        # The envelope row is locked and every append goes through it, so its recorded tail
        # is the chain's tail (the unique (chain, sequence) constraint backs that up).
        chain_rows = draft_rows(
            envelope.chain_id,
            drafts_by_envelope[envelope.pk],
            len(envelope.audit_event_ids),
            envelope.final_event_hash,
        )
        envelope.audit_event_ids = [*envelope.audit_event_ids, *(row["id"] for row in chain_rows)]
        envelope.final_event_hash = chain_rows[-1]["hash"]
        envelope.updated_at = now
        rows.extend(chain_rows)
    kinds = {envelope.kind for envelope in envelopes}
    fields = ["state", "closed_at", "audit_event_ids", "final_event_hash", "updated_at"]
    fields += sorted({name for kind in kinds for name in _RULES[kind].envelope_fields})
    update_rows(Envelope, envelopes, fields)
    by_kind: dict[str, list] = {}
    for envelope in envelopes:
        by_kind.setdefault(envelope.kind, []).append(subjects[envelope.pk])
    for kind, changed in by_kind.items():
        _RULES[kind].save(changed, now)
    if deliveries:
        for enqueue in _outbox:
            enqueue(deliveries)
    # Last: linking into the ledger takes the ledger head's lock, held until the commit.
    store_rows(rows)
    by_organization: dict = {}
    for envelope in envelopes:  # one organization per batch (decide_many's), but say it as it is
        by_organization.setdefault(envelope.organization_id, []).append(envelope.pk)
    for organization_id, envelope_ids in by_organization.items():
        announce_on_commit(organization_id, envelope_ids)


def _uuid_or_none(value) -> uuid.UUID | None:
    try:
        return value if isinstance(value, uuid.UUID) else uuid.UUID(str(value))
    except ValueError:
        return None
