"""A governed-runtime world for installer tests: an organization root with its owner, the
owner's wallets, the governance entitlement, a signed package, and wallet sessions opened
by real Sign-In with Ethereum (keys made here)."""

from dataclasses import dataclass

from django.utils import timezone
from eth_account import Account
from rest_framework.test import APIClient

from entitlements.services.issuance import set_status_entitlement
from governance.choices import MembershipStatus, PrincipalRole, WalletPurpose
from governance.models import Organization, Principal, PrincipalWallet
from governance.siwe import format_message
from tests.siwe_wallets import sign as sign_text

DOMAIN = "mandate.example"
ORG_ROOT_ID = "org.acme.root"
PRINCIPAL_ID = "human.joshua"


def open_wallet_session(client: APIClient, account, domain: str = DOMAIN) -> str:
    """A wallet session for ``account``, through ``/governance/auth/nonce`` and ``/verify``
    (the test's settings must name ``domain``: PUBLIC_BASE_URL ``https://{domain}``)."""
    nonce = client.get("/governance/auth/nonce").json()["nonce"]
    message = format_message(
        domain=domain,
        address=account.address,
        statement="Install the governed runtime.",
        uri=f"https://{domain}/launcher",
        chain_id=1,
        nonce=nonce,
        issued_at=timezone.now(),
    )
    answer = client.post(
        "/governance/auth/verify", {"message": message, "signature": sign_text(account, message)}, format="json"
    )
    assert answer.status_code == 200, answer.content
    return answer.json()["wallet_session"]


def signed_in_session(account) -> str:
    """A wallet session for ``account`` through the sign-in service itself (a message for
    this deployment's domain, signed with the account's key)."""
    from governance.services.wallet_sessions import expected_domain, issue_nonce, verify_sign_in

    message = format_message(
        domain=expected_domain(),
        address=account.address,
        statement="Install the governed runtime.",
        uri=f"https://{expected_domain()}/launcher",
        chain_id=1,
        nonce=issue_nonce().nonce,
        issued_at=timezone.now(),
    )
    return verify_sign_in(message, sign_text(account, message)).secret


@dataclass
class Owner:
    organization: Organization
    principal: Principal
    account: object  # eth_account LocalAccount: the ownership wallet's key
    payment_account: object

    @property
    def wallet(self) -> str:
        return self.account.address


def make_owner(
    org_root_id: str = ORG_ROOT_ID,
    principal_id: str = PRINCIPAL_ID,
    *,
    role: str = PrincipalRole.ORG_ROOT_OWNER,
    membership: str = MembershipStatus.ACTIVE,
    entitlement: str | None = "active",
    organization: Organization | None = None,
) -> Owner:
    """An organization root (made unless given) and its principal with an ownership and a
    payment wallet; the governance entitlement set to ``entitlement`` (None: none at all)."""
    if organization is None:
        organization = Organization.objects.create(
            slug=org_root_id.replace(".", "-"), name=org_root_id, org_root_id=org_root_id
        )
    principal = Principal.objects.create(
        organization=organization,
        principal_id=principal_id,
        role=role,
        membership_status=membership,
        identity_assurance_level="onramp_attested",
    )
    account, payment = Account.create(), Account.create()
    PrincipalWallet.objects.create(principal=principal, address=account.address, purpose=WalletPurpose.OWNERSHIP)
    PrincipalWallet.objects.create(principal=principal, address=payment.address, purpose=WalletPurpose.PAYMENT)
    if entitlement is not None:
        set_governance_entitlement(organization, account.address, entitlement)
    return Owner(organization, principal, account, payment)


def set_governance_entitlement(organization: Organization, wallet: str, status: str):
    return set_status_entitlement(
        organization.pk, principal=wallet, plan_id="governance", status=status, expires_at=None, issued_by="tests"
    )


def make_active_device(owner: Owner, device_id: str = "desktop-7f6f3a9b", *, lease_days: int = 30, **fields):
    """A device the owner's wallet installed and activated (as a confirmed install leaves it),
    made directly: tests of what happens after an install start here."""
    from datetime import timedelta

    from governance.choices import AvailabilityState, InstallState
    from governance.models import Device

    now = timezone.now()
    values = {
        "organization": owner.organization,
        "principal": owner.principal,
        "platform": "macos",
        "launcher_version": "0.2.0",
        "runtime_version": "1.0.0",
        "policy_hash": "sha256:" + "f1" * 32,
        "install_state": InstallState.ACTIVE,
        "availability_state": AvailabilityState.ACTIVE,
        "lease_expires_at": now + timedelta(days=lease_days),
        "activated_at": now,
    }
    values.update(fields)
    return Device.objects.create(device_id=device_id, wallet=owner.wallet, **values)
