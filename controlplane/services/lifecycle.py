"""Lifecycle changes of declared authority.

Surfaces and profiles move review → active → deprecated by explicit approval; grants move
between active, suspended and revoked (``GRANT_TRANSITIONS``). Each change locks the row it
changes (``SELECT ... FOR UPDATE``), so two concurrent approvals cannot both succeed, and
writes a control-plane audit record in the same transaction.
"""

from dataclasses import dataclass

from django.db import transaction
from django.utils import timezone

from controlplane.choices import GRANT_TRANSITIONS, GrantStatus, Kind, ProfileStatus, SurfaceStatus, is_resource_id
from controlplane.models import Grant, Profile, Surface
from controlplane.services.revision import bump_revision
from evidence.services.audit_trails import record_controlplane_change
from governance.choices import Role
from governance.errors import Conflict, DomainError, Invalid, NotFound, Refused

APPROVE_PERMISSION = "controlplane:approve"
LIFECYCLE_PERMISSION = "controlplane:lifecycle"

# Grant actions and the status each one leads to.
GRANT_ACTIONS = {
    "suspend": GrantStatus.SUSPENDED,
    "revoke": GrantStatus.REVOKED,
    "reinstate": GrantStatus.ACTIVE,
}


def _normalized(name) -> str:
    return str(name or "").strip().casefold()


@dataclass(frozen=True)
class Principal:
    """Who makes a lifecycle change.

    ``name`` is what gets recorded (``approved_by``, the audit ``actor``); ``identities``
    are every name the principal is known by (username, email, UUID), normalized, for the
    ownership and maker-checker rules.
    """

    name: str
    identities: frozenset[str]
    is_admin: bool = False

    @classmethod
    def of(cls, user, roles, *, subject_id: str = "", claimed: str = "") -> "Principal":
        """The authenticated person; with no person behind the credential (open mode), the
        identity the request body claims."""
        username = getattr(user, "username", "") if getattr(user, "is_authenticated", False) else ""
        is_admin = Role.PLATFORM_ADMIN in roles
        if username:
            names = {username, getattr(user, "email", ""), str(getattr(user, "pk", "") or "")}
            return cls(username, frozenset(_normalized(n) for n in names if _normalized(n)), is_admin)
        name = str(claimed or "").strip() or subject_id or "anonymous"
        return cls(name, frozenset({_normalized(name)}), is_admin)

    def is_one_of(self, *names) -> bool:
        return any(_normalized(n) in self.identities for n in names if _normalized(n))


def valid_identifier(value: str) -> bool:
    """A declared resource's id, as bundles' ``metadata.id`` allows it."""
    return is_resource_id(value)


# --- surfaces ---------------------------------------------------------------------------


def _record_change(organization, **change) -> None:
    """Every lifecycle change moves the evaluation cache's revision and leaves an audit record."""
    bump_revision(organization)
    record_controlplane_change(organization_id=organization.pk, **change)


@dataclass(frozen=True)
class Refusal:
    """Why a lifecycle action is refused: ``code`` for people (the admin explains it in its
    own words), ``kind`` and ``error`` for the domain error a service raises."""

    code: str  # not_owner | not_in_review | maker_checker
    kind: type[DomainError]  # Refused (who acts) or Conflict (the state it is in)
    error: str

    def as_error(self) -> DomainError:
        if self.kind is Refused:
            return Refused(self.error, required_permission=APPROVE_PERMISSION)
        return self.kind(self.error)


def surface_approval_refusal(surface: Surface, principal: Principal, submitted_by: str = "") -> Refusal | None:
    """The one rule for approving a surface's latest version; None when allowed."""
    if not principal.is_admin and not principal.is_one_of(surface.business_owner, surface.technical_owner):
        # A governance approver may approve only the surfaces they own.
        return Refusal("not_owner", Refused, "forbidden")
    if surface.status != SurfaceStatus.REVIEW:
        return Refusal(
            "not_in_review",
            Conflict,
            f"surface {surface.key!r} is not in review status (version {surface.version} is {surface.status})",
        )
    if principal.is_one_of(submitted_by, surface.submitted_by):
        return Refusal("maker_checker", Conflict, "maker-checker: the submitter cannot approve their own surface")
    return None


def _locked_surface_versions(organization, surface_id):
    return Surface.objects.select_for_update().filter(organization=organization, key=surface_id).order_by("-version")


@transaction.atomic
def approve_surface(*, organization, surface_id: str, principal: Principal, submitted_by: str) -> Surface:
    """Promote the surface's latest version from review to active.

    Other versions that are already active stay active: evaluation uses the newest active
    version whose effective window covers now.
    """
    surface = _locked_surface_versions(organization, surface_id).first()
    if surface is None:
        raise NotFound(f"surface {surface_id!r} not found")
    refusal = surface_approval_refusal(surface, principal, submitted_by)
    if refusal is not None:
        raise refusal.as_error()

    now = timezone.now()
    surface.status = SurfaceStatus.ACTIVE
    surface.approved_by = principal.name
    surface.approved_at = now
    surface.effective_from = surface.effective_from or now
    surface.save(update_fields=["status", "approved_by", "approved_at", "effective_from", "updated_at"])
    _record_change(
        organization,
        kind=Kind.SURFACE,
        resource_id=surface.key,
        version=surface.version,
        action="approve",
        actor=principal.name,
        summary=f"surface {surface.key} v{surface.version} approved (review → active)",
        details={"from_status": SurfaceStatus.REVIEW, "to_status": SurfaceStatus.ACTIVE, "submitted_by": submitted_by},
    )
    return surface


@transaction.atomic
def deprecate_surface(
    *, organization, surface_id: str, principal: Principal, reason: str, successor_id: str = ""
) -> Surface:
    """Deprecate the surface: every active version becomes deprecated (so an older active
    version cannot silently take over evaluation). Returns the newest one."""
    versions = list(_locked_surface_versions(organization, surface_id))
    if not versions:
        raise NotFound(f"surface {surface_id!r} not found")
    if successor_id:
        if successor_id == surface_id:
            raise Invalid("a surface cannot be its own successor", field="successor_id")
        if not Surface.objects.filter(organization=organization, key=successor_id).exists():
            raise Invalid(f"surface {successor_id!r} not found", field="successor_id")
    active = [surface for surface in versions if surface.status == SurfaceStatus.ACTIVE]
    if not active:
        raise Conflict(
            f"surface {surface_id!r} is not in active status (version {versions[0].version} is {versions[0].status})",
        )

    for surface in active:
        surface.status = SurfaceStatus.DEPRECATED
        surface.deprecation_reason = reason
        surface.successor_surface_id = successor_id
        surface.save(update_fields=["status", "deprecation_reason", "successor_surface_id", "updated_at"])
        _record_change(
            organization,
            kind=Kind.SURFACE,
            resource_id=surface.key,
            version=surface.version,
            action="deprecate",
            actor=principal.name,
            summary=f"surface {surface.key} v{surface.version} deprecated (active → deprecated)",
            details={
                "from_status": SurfaceStatus.ACTIVE,
                "to_status": SurfaceStatus.DEPRECATED,
                "deprecation_reason": reason,
                "successor_surface_id": successor_id,
            },
        )
    return active[0]


# --- profiles ---------------------------------------------------------------------------


def _locked_profile_version(organization, profile_id: str, version: int) -> Profile:
    profile = (
        Profile.objects.select_for_update().filter(organization=organization, key=profile_id, version=version).first()
    )
    if profile is not None:
        return profile
    if Profile.objects.filter(organization=organization, key=profile_id).exists():
        raise NotFound(f"profile {profile_id!r} has no version {version}")
    raise NotFound(f"profile {profile_id!r} not found")


def _change_profile_status(
    organization, profile_id, version, principal, *, action, from_status, to_status, refuse=None, **fields
):
    profile = _locked_profile_version(organization, profile_id, version)
    if profile.status != from_status:
        raise Conflict(
            f"profile {profile_id!r} version {version} is not in {from_status} status (it is {profile.status})"
        )
    if refuse is not None:
        refuse(profile)
    profile.status = to_status
    for name, value in fields.items():
        setattr(profile, name, value)
    profile.save(update_fields=["status", *fields, "updated_at"])
    _record_change(
        organization,
        kind=Kind.PROFILE,
        resource_id=profile.key,
        version=profile.version,
        action=action,
        actor=principal.name,
        summary=f"profile {profile.key} v{profile.version} {action}d ({from_status} → {to_status})",
        details={"from_status": from_status, "to_status": to_status},
    )
    return profile


def _refuse_own_profile(principal: Principal):
    """Maker-checker for profiles: a profile's thresholds are authority just as a surface is,
    so whoever applied a version cannot approve it."""

    def refuse(profile: Profile) -> None:
        if principal.is_one_of(profile.submitted_by):
            raise Conflict("maker-checker: the submitter cannot approve their own profile")

    return refuse


@transaction.atomic
def approve_profile(*, organization, profile_id: str, version: int, principal: Principal) -> Profile:
    """Promote one profile version from review to active; not by the principal that applied it."""
    return _change_profile_status(
        organization,
        profile_id,
        version,
        principal,
        action="approve",
        from_status=ProfileStatus.REVIEW,
        to_status=ProfileStatus.ACTIVE,
        refuse=_refuse_own_profile(principal),
        approved_by=principal.name,
        approved_at=timezone.now(),
    )


@transaction.atomic
def deprecate_profile(*, organization, profile_id: str, version: int, principal: Principal) -> Profile:
    """Move one profile version from active to deprecated."""
    return _change_profile_status(
        organization,
        profile_id,
        version,
        principal,
        action="deprecate",
        from_status=ProfileStatus.ACTIVE,
        to_status=ProfileStatus.DEPRECATED,
    )


# --- grants -----------------------------------------------------------------------------


@transaction.atomic
def change_grant_status(*, organization, grant_id: str, action: str, principal: Principal, reason: str) -> Grant:
    """Suspend, revoke or reinstate a grant, as ``GRANT_TRANSITIONS`` allows (revoked is terminal)."""
    target = GRANT_ACTIONS[action]
    grant = (
        Grant.objects.select_for_update(of=("self",))
        .select_related("agent")
        .filter(organization=organization, key=grant_id)
        .first()
    )
    if grant is None:
        raise NotFound(f"grant {grant_id!r} not found")
    current = grant.status
    if target not in GRANT_TRANSITIONS.get(current, set()):
        raise Conflict(f"grant {grant_id!r} is {current}: cannot {action} it")

    grant.status = target
    grant.save(update_fields=["status", "updated_at"])
    _record_change(
        organization,
        kind=Kind.GRANT,
        resource_id=grant.key,
        action=action,
        actor=principal.name,
        summary=f"grant {grant.key} {current} → {target}: {reason}",
        details={"from_status": current, "to_status": target, "reason": reason},
    )
    return grant
