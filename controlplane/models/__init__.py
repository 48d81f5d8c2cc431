from controlplane.models.authority import Agent, Grant, Policy, Profile, Surface
from controlplane.models.gate import (
    ActionManifest,
    ApprovalAllowlistEntry,
    LearnedDomain,
    LearnedPath,
    PolicyGrant,
    PolicyPrincipal,
    PolicyState,
)
from controlplane.models.revision import Revision
from controlplane.models.structure import BusinessService, BusinessServiceCapability, Capability, Process

__all__ = [
    "ActionManifest",
    "ApprovalAllowlistEntry",
    "LearnedDomain",
    "LearnedPath",
    "PolicyGrant",
    "PolicyPrincipal",
    "PolicyState",
    "Agent",
    "BusinessService",
    "BusinessServiceCapability",
    "Capability",
    "Grant",
    "Policy",
    "Process",
    "Profile",
    "Revision",
    "Surface",
]
