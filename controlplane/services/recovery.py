"""Version state of surfaces and profiles: latest, active, and the read-only recovery analysis.

A surface or profile id names a history of versions. The *latest* version is the
highest-numbered one, whatever its status; the *active* version is the highest-numbered
version whose status is ``active`` and whose effective window covers now — the one
evaluation uses. Recovery reports explain the gap between the two to an operator, with
deterministic warnings and recommended next actions (docs/introspection.md lists them).

The recommended actions are MIDAS's strings, word for word; the first warnings of each
kind are MIDAS's too, the rest are Mandate's additions. Nothing here writes.
"""

from dataclasses import dataclass, field
from datetime import datetime

from django.db.models import OuterRef, QuerySet, Subquery
from django.utils import timezone

from controlplane.choices import GrantStatus, ProfileStatus, SurfaceStatus
from controlplane.models.authority import Profile, effective_now

# --- recommended next actions (MIDAS's wording; clients match on these strings) ------------

APPROVE_TO_ENABLE_EVALUATION = "approve latest review version to enable evaluation"
APPROVE_TO_ACTIVATE_UPDATE = "approve latest review version to activate updated configuration"
INSPECT_SUCCESSOR = "inspect successor surface '{successor}' and plan grant migration"
APPLY_REPLACEMENT = "apply replacement surface"
APPROVE_REPLACEMENT = "approve replacement surface"
DEPRECATE_WITH_SUCCESSOR = "deprecate this surface with successor_id pointing to the replacement"

REAPPLY_PROFILE_IN_THE_PAST = "re-apply profile with an effective_date in the past to restore evaluation eligibility"
INSPECT_DEPENDENT_GRANTS = "inspect dependent grants before deprecating this profile version"
# Not in the reference page's table, but what MIDAS answers when a profile version awaits approval.
APPROVE_PROFILE_REVIEW = "approve latest review version to activate updated authority"

# --- warnings -------------------------------------------------------------------------------

SURFACE_DEPRECATED = "surface is deprecated and should not receive new grants"
SURFACE_RETIRED = "surface is retired and is no longer operational"
SURFACE_NOT_EVALUABLE = "no active version — evaluation requests will be rejected"
PROFILE_FUTURE_DATED = "no version is currently effective; a version exists with a future effective_date"
PROFILE_NOT_EVALUABLE = "no active version — evaluation requests referencing this profile will fail"
PROFILE_DEPRECATED = "profile is deprecated"
PROFILE_RETIRED = "profile is retired"
LATEST_IN_REVIEW = "latest version {latest} is in review; evaluation uses version {active}"
ACTIVE_OUTSIDE_WINDOW = "version {version} is active but outside its effective window"

PROFILE_CAPABILITY_NOTE = (
    "profiles follow a governed review→active→deprecated lifecycle; "
    "apply creates a review version, explicit approval is required before runtime use"
)


# --- version queries ------------------------------------------------------------------------

# The status that makes a version usable; SurfaceStatus and ProfileStatus share the value.
ACTIVE = SurfaceStatus.ACTIVE


def latest_versions(versions: QuerySet) -> QuerySet:
    """The rows of ``versions`` that are their id's latest version in the organization, one query
    whatever the number of ids. Filter afterwards to ask about the latest version (a profile
    whose latest version is attached to a surface), before to narrow which ids to look at."""
    newest = versions.model.objects.filter(organization=OuterRef("organization"), key=OuterRef("key")).order_by(
        "-version"
    )
    return versions.filter(version=Subquery(newest.values("version")[:1]))


def active_version(versions: QuerySet, *, now: datetime | None = None):
    """The version evaluation uses: status active, effective window covering ``now``, newest first."""
    return _effective(versions, now).order_by("-version").first()


def _effective(versions: QuerySet, now: datetime | None) -> QuerySet:
    # Surfaces name the window's start effective_from, profiles effective_date (as MIDAS does).
    start = "effective_date" if issubclass(versions.model, Profile) else "effective_from"
    return versions.filter(status=ACTIVE).filter(effective_now(start, "effective_until", now=now))


def _version_state(versions: QuerySet, now: datetime):
    """All versions newest first, the active one (or ``None``), and the versions that are
    ``active`` but outside their effective window. Two queries."""
    history = list(versions.order_by("-version"))
    if not history:
        return [], None, []
    effective = set(_effective(versions, now).values_list("version", flat=True))
    active = next((v for v in history if v.version in effective), None)
    outside = [v.version for v in history if v.status == ACTIVE and v.version not in effective]
    return history, active, outside


# --- recovery reports -----------------------------------------------------------------------


@dataclass(frozen=True)
class SurfaceRecovery:
    surface_id: str
    latest_version: int
    latest_status: str
    active_version: int | None
    active_status: str | None
    successor_surface_id: str
    deprecation_reason: str
    version_count: int
    warnings: list[str] = field(default_factory=list)
    recommended_next_actions: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class ProfileRecovery:
    profile_id: str
    surface_id: str
    latest_version: int
    latest_status: str
    active_version: int | None
    active_status: str | None
    version_count: int
    versions: list[dict]
    active_grant_count: int
    capability_note: str
    warnings: list[str] = field(default_factory=list)
    recommended_next_actions: list[str] = field(default_factory=list)


def surface_recovery(versions: QuerySet, *, now: datetime | None = None) -> SurfaceRecovery | None:
    """Recovery analysis of one surface, given all its versions (``None`` when there are none)."""
    now = now or timezone.now()
    history, active, outside = _version_state(versions, now)
    if not history:
        return None
    latest = history[0]
    return SurfaceRecovery(
        surface_id=latest.key,
        latest_version=latest.version,
        latest_status=latest.status,
        active_version=active.version if active else None,
        active_status=active.status if active else None,
        successor_surface_id=latest.successor_surface_id,
        deprecation_reason=latest.deprecation_reason,
        version_count=len(history),
        warnings=_surface_warnings(history, active) + _common_warnings(history, active, outside),
        recommended_next_actions=_surface_actions(history, active),
    )


def _surface_warnings(history, active) -> list[str]:
    latest = history[0]
    warnings = []
    if latest.status == SurfaceStatus.DEPRECATED:
        warnings.append(SURFACE_DEPRECATED)
    if latest.status == SurfaceStatus.RETIRED:
        warnings.append(SURFACE_RETIRED)
    if active is None and latest.status not in (SurfaceStatus.DEPRECATED, SurfaceStatus.RETIRED):
        warnings.append(SURFACE_NOT_EVALUABLE)
    return warnings


def _surface_actions(history, active) -> list[str]:
    latest = history[0]
    has_review = any(v.status == SurfaceStatus.REVIEW for v in history)
    has_deprecated = any(v.status == SurfaceStatus.DEPRECATED for v in history)
    if latest.status == SurfaceStatus.DEPRECATED:
        if latest.successor_surface_id:
            return [INSPECT_SUCCESSOR.format(successor=latest.successor_surface_id)]
        return [APPROVE_REPLACEMENT if has_review else APPLY_REPLACEMENT]
    if latest.status == SurfaceStatus.REVIEW:
        if active is not None:
            return [APPROVE_TO_ACTIVATE_UPDATE]
        # A review version after a deprecated one is that surface's replacement.
        return [APPROVE_REPLACEMENT if has_deprecated else APPROVE_TO_ENABLE_EVALUATION]
    if latest.status == SurfaceStatus.ACTIVE and has_review:
        return [DEPRECATE_WITH_SUCCESSOR]
    return []


def profile_recovery(versions: QuerySet, grants: QuerySet, *, now: datetime | None = None) -> ProfileRecovery | None:
    """Recovery analysis of one profile, given all its versions and the organization's grants
    (``None`` when there are no versions)."""
    now = now or timezone.now()
    history, active, outside = _version_state(versions, now)
    if not history:
        return None
    latest = history[0]
    active_grants = grants.filter(profile_key=latest.key, status=GrantStatus.ACTIVE).count()
    return ProfileRecovery(
        profile_id=latest.key,
        surface_id=latest.surface_key,
        latest_version=latest.version,
        latest_status=latest.status,
        active_version=active.version if active else None,
        active_status=active.status if active else None,
        version_count=len(history),
        versions=[{"version": v.version, "status": v.status, "effective_from": v.effective_date} for v in history],
        active_grant_count=active_grants,
        capability_note=PROFILE_CAPABILITY_NOTE,
        warnings=_profile_warnings(history, active, now) + _common_warnings(history, active, outside),
        recommended_next_actions=_profile_actions(history, active, active_grants, now),
    )


def _future_dated(history, now) -> bool:
    return any(v.status == ACTIVE and v.effective_date and v.effective_date > now for v in history)


def _profile_warnings(history, active, now) -> list[str]:
    latest = history[0]
    warnings = []
    if active is None:
        warnings.append(PROFILE_FUTURE_DATED if _future_dated(history, now) else PROFILE_NOT_EVALUABLE)
    if latest.status == ProfileStatus.DEPRECATED:
        warnings.append(PROFILE_DEPRECATED)
    if latest.status == ProfileStatus.RETIRED:
        warnings.append(PROFILE_RETIRED)
    return warnings


def _profile_actions(history, active, active_grants: int, now) -> list[str]:
    actions = []
    if any(v.status == ProfileStatus.REVIEW for v in history):
        actions.append(APPROVE_PROFILE_REVIEW)
    if active is None:
        if _future_dated(history, now):
            actions.append(REAPPLY_PROFILE_IN_THE_PAST)
    elif active_grants > 0:
        actions.append(INSPECT_DEPENDENT_GRANTS)
    return actions


def _common_warnings(history, active, outside: list[int]) -> list[str]:
    """Mandate's additions, for surfaces and profiles alike, after the kind's own warnings."""
    latest = history[0]
    warnings = []
    if latest.status == SurfaceStatus.REVIEW and active is not None:
        warnings.append(LATEST_IN_REVIEW.format(latest=latest.version, active=active.version))
    return warnings + [ACTIVE_OUTSIDE_WINDOW.format(version=version) for version in outside]
