from governance.models.gate import DpopReplay, GateLease, GateState, OperatorKey
from governance.models.identity import Organization, Person, RoleAssignment, Team, TeamMembership
from governance.models.installs import (
    AccountWallet,
    Device,
    InstallToken,
    Principal,
    PrincipalWallet,
    RenewalBundle,
    RuntimePackage,
    SignerKey,
)
from governance.models.tokens import ApiToken
from governance.models.wallets import SiweNonce, WalletSession

__all__ = [
    "AccountWallet",
    "Device",
    "InstallToken",
    "Principal",
    "PrincipalWallet",
    "RenewalBundle",
    "RuntimePackage",
    "SignerKey",
    "ApiToken",
    "DpopReplay",
    "GateLease",
    "GateState",
    "OperatorKey",
    "Organization",
    "Person",
    "RoleAssignment",
    "SiweNonce",
    "Team",
    "TeamMembership",
    "WalletSession",
]
