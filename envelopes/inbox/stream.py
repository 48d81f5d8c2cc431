"""What the inbox's live stream reads (``stream_route`` serves it): who a session cookie
belongs to, and the inbox as that person sees it — how many cards wait, which of them they
may decide now, the version pages compare — and what changed since the stream last looked.

Synchronous and short: the route runs these in its small thread pool, which hands each
connection back at once. A look costs a few queries whatever the inbox holds; a look whose
version has not moved costs one (plus the session's three on a keepalive).
"""

from dataclasses import dataclass
from importlib import import_module
from types import SimpleNamespace

from django.conf import settings
from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY, get_user_model, load_backend
from django.core.exceptions import ValidationError
from django.db.models import Count, Max
from django.utils.crypto import constant_time_compare

from envelopes.choices import EnvelopeKind
from envelopes.inbox.cards import card_url
from envelopes.inbox.console import viewer_of
from envelopes.inbox.labels import KIND_LABELS, action_title, hold_reason_text, reason_title, type_label
from envelopes.inbox.permissions import (
    CANDIDATE_LIMIT,
    Viewer,
    actionable,
    escalation_refusals,
    held_action_refusals,
    may_use_console,
    readable,
)
from envelopes.inbox.waiting import pending_envelopes, version_of
from envelopes.models import Envelope

ARRIVED_LIMIT = 10  # cards named in one event (a burst says "and N more" by its count)
LEFT_LIMIT = 100
SUMMARY_LENGTH = 200


@dataclass(frozen=True)
class InboxState:
    """The inbox as one person sees it, at one moment."""

    version: str  # what the page's data-version holds: the waiting count and the last change
    waiting: int  # cards waiting that this person may read (the tab title's number)
    decidable: frozenset[str]  # ids of the waiting cards this person may decide now


@dataclass(frozen=True)
class Look:
    viewer: Viewer
    state: InboxState
    event: dict | None  # what to send ("inbox" event data); None: nothing changed


def session_user(session_key: str):
    """The active person a session cookie signs in, or None. Read-only: unlike Django's
    ``get_user`` it never flushes nor cycles the session (the next page does that)."""
    session = import_module(settings.SESSION_ENGINE).SessionStore(session_key)
    try:
        user_id = get_user_model()._meta.pk.to_python(session[SESSION_KEY])
        backend_path = session[BACKEND_SESSION_KEY]
    except (KeyError, ValidationError):
        return None
    if backend_path not in settings.AUTHENTICATION_BACKENDS:
        return None
    user = load_backend(backend_path).get_user(user_id)
    if user is None or not hasattr(user, "get_session_auth_hash"):
        return None
    session_hash = session.get(HASH_SESSION_KEY) or ""
    hashes = [user.get_session_auth_hash(), *user.get_session_auth_fallback_hash()]
    if not session_hash or not any(constant_time_compare(session_hash, known) for known in hashes):
        return None  # the password changed since: signed out
    return user


def session_viewer(session_key: str) -> Viewer | None:
    """Who may watch the inbox with this session: staff of an organization, as the inbox
    itself asks (``may_use_console``), with no password change pending; None otherwise."""
    user = session_user(session_key) if session_key else None
    if user is None or getattr(user, "must_change_password", False):
        return None
    viewer = viewer_of(SimpleNamespace(user=user))
    if not may_use_console(viewer) or viewer.organization is None:
        return None
    return viewer


def _totals(organization) -> tuple[int, str]:
    totals = pending_envelopes(organization).order_by().aggregate(n=Count("id"), latest=Max("updated_at"))
    return totals["n"], version_of(totals["n"], totals["latest"])


def inbox_state(viewer: Viewer, totals: tuple[int, str] | None = None) -> InboxState:
    """How many cards the viewer may read, and which they may decide: the requests by the
    core's ``refusal`` (``actionable``), the escalations and held actions too."""
    organization = viewer.organization
    count, version = totals or _totals(organization)
    refusals = actionable(viewer)
    waiting = count if viewer.reads_all else readable(viewer, pending_envelopes(organization), refusals).count()
    escalations = (
        pending_envelopes(organization)
        .filter(kind=EnvelopeKind.EVALUATION)
        .only("id", "kind", "state")[:CANDIDATE_LIMIT]
    )
    refusals.update(escalation_refusals(viewer, escalations))
    refusals.update(held_action_refusals(viewer))
    decidable = frozenset(pk for pk, refused in refusals.items() if refused is None)
    return InboxState(version, waiting, decidable)


def heading(envelope) -> dict:
    """A card in a few words, for a desktop notification."""
    if envelope.kind == EnvelopeKind.APPROVAL_REQUEST:
        approval = envelope.approval_request
        kind, title, summary = type_label(approval), approval.title, approval.summary
    elif envelope.kind == EnvelopeKind.ACTION:
        held = envelope.gate_approval
        kind, title = KIND_LABELS[envelope.kind], action_title(held.action_id, held.action_version)
        summary = hold_reason_text(held.hold_reason)
    else:
        kind = KIND_LABELS.get(envelope.kind, envelope.kind)
        title, summary = reason_title(envelope.reason_code), (envelope.response or {}).get("explanation", "")
    return {
        "id": str(envelope.pk),
        "kind": kind,
        "title": title,
        "summary": str(summary or "")[:SUMMARY_LENGTH],
        "url": card_url(envelope),
    }


def event_of(state: InboxState, previous: InboxState | None) -> dict:
    """The ``inbox`` event: the counts and version, and the cards the viewer may decide that
    arrived (``arrived``, newest first, with their headings) or left (``left``: decided,
    by them or someone else, or no longer theirs) since ``previous``."""
    arrived, left = [], []
    if previous is not None:
        new = state.decidable - previous.decidable
        if new:
            rows = (
                Envelope.objects.filter(pk__in=list(new))
                .select_related("approval_request", "gate_approval")
                .order_by("-created_at")
            )
            arrived = [heading(envelope) for envelope in rows[:ARRIVED_LIMIT]]
        left = sorted(previous.decidable - state.decidable)[:LEFT_LIMIT]
    return {
        "version": state.version,
        "waiting": state.waiting,
        "decidable": len(state.decidable),
        "arrived": arrived,
        "left": left,
    }


def open_look(session_key: str) -> Look | None:
    """The stream's first look: who, and the inbox now (sent whole). None: not allowed."""
    viewer = session_viewer(session_key)
    if viewer is None:
        return None
    state = inbox_state(viewer)
    return Look(viewer, state, event_of(state, None))


def look_again(viewer: Viewer, previous: InboxState, session_key: str | None = None) -> Look | None:
    """Look again after a notification (or, with ``session_key``, on a keepalive: the session
    is checked again too). None: the stream must end (signed out, no longer allowed, moved
    to another organization)."""
    if session_key is not None:
        again = session_viewer(session_key)
        if again is None or again.organization.pk != viewer.organization.pk:
            return None
        unchanged_roles = again.roles == viewer.roles
        viewer = again
    else:
        unchanged_roles = True
    totals = _totals(viewer.organization)
    if totals[1] == previous.version and unchanged_roles:
        return Look(viewer, previous, None)
    state = inbox_state(viewer, totals)
    return Look(viewer, state, event_of(state, previous) if state != previous else None)
