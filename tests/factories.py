"""Typed factories for control-plane objects, for tests that need state without a bundle."""

from datetime import timedelta
from pathlib import Path

from django.utils import timezone

from controlplane.models import Agent, BusinessService, Capability, Grant, Process, Profile, Surface
from governance.models import Organization

DEMO_BUNDLE = (Path(__file__).resolve().parent.parent / "controlplane" / "demo" / "bundle.yaml").read_bytes()


def business_service(org: Organization, key="bs-lending", **fields) -> BusinessService:
    return BusinessService.objects.create(organization=org, key=key, name=fields.pop("name", key), **fields)


def capability(org: Organization, key="cap-lending", **fields) -> Capability:
    return Capability.objects.create(organization=org, key=key, name=fields.pop("name", key), **fields)


def process(org: Organization, key="proc-loans", service=None, **fields) -> Process:
    service = service or BusinessService.objects.filter(organization=org).first() or business_service(org)
    return Process.objects.create(
        organization=org, key=key, business_service=service, name=fields.pop("name", key), **fields
    )


def surface(
    org: Organization, key="surf-loan-approval", version=1, status="active", process_=None, **fields
) -> Surface:
    process_ = process_ or Process.objects.filter(organization=org).first() or process(org)
    fields.setdefault("effective_from", timezone.now() - timedelta(days=1))
    return Surface.objects.create(
        organization=org,
        key=key,
        version=version,
        status=status,
        process=process_,
        name=fields.pop("name", key),
        **fields,
    )


def profile(
    org: Organization, key="prof-loans-standard", surface_key="surf-loan-approval", version=1, status="active", **fields
) -> Profile:
    fields.setdefault("effective_date", timezone.now() - timedelta(days=1))
    fields.setdefault("confidence_threshold", 0.8)
    return Profile.objects.create(
        organization=org,
        key=key,
        surface_key=surface_key,
        version=version,
        status=status,
        name=fields.pop("name", key),
        **fields,
    )


def agent(org: Organization, key="agent-loans", **fields) -> Agent:
    return Agent.objects.create(organization=org, key=key, name=fields.pop("name", key), **fields)


def grant(org: Organization, key="grant-loans", agent_=None, profile_key="prof-loans-standard", **fields) -> Grant:
    agent_ = agent_ or Agent.objects.filter(organization=org).first() or agent(org)
    return Grant.objects.create(organization=org, key=key, agent=agent_, profile_key=profile_key, **fields)


def declare_demo_authority(org: Organization) -> Organization:
    """The demo bundle applied and active now: what evaluation tests evaluate against."""
    from controlplane.services.bundles import apply_bundle
    from controlplane.services.revision import bump_revision

    apply_bundle(org, DEMO_BUNDLE, actor="system:test")
    Surface.objects.filter(organization=org).update(status="active", effective_from=timezone.now() - timedelta(days=1))
    Profile.objects.filter(organization=org).update(status="active")
    bump_revision(org)
    return org
