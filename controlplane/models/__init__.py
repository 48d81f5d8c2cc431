from controlplane.models.authority import Agent, Grant, Policy, Profile, Surface
from controlplane.models.revision import Revision
from controlplane.models.structure import BusinessService, BusinessServiceCapability, Capability, Process

__all__ = [
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
