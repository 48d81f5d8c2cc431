"""Governed runtime installs (edut's installer, docs/installs.md): an organization's
principals and their wallets, the runtime packages launchers install, the devices they run
on, the single-use install tokens, and the offline renewal bundles that keep a device's
availability lease alive without a network."""

import re
import uuid

from django.core.exceptions import ValidationError
from django.core.validators import RegexValidator
from django.db import models

from governance.choices import (
    AccessClass,
    AvailabilityState,
    IdentityAssurance,
    InstallState,
    MembershipStatus,
    PackageStatus,
    PrincipalRole,
    SignerKeyStatus,
    WalletPurpose,
)
from governance.siwe import BadChecksum, checksummed

IDENTIFIER = RegexValidator(
    r"\A[a-z0-9][a-z0-9._-]{0,119}\Z", "lower-case letters, digits and . _ -, starting with a letter or digit"
)
ADDRESS = re.compile(r"\A0x[0-9a-fA-F]{40}\Z")
WALLET_ADDRESS = RegexValidator(ADDRESS, "a 0x-prefixed 20-byte hex address")


def checksummed_address(address: str) -> str:
    """The EIP-55 form of an address (see ``governance.siwe.checksummed``)."""
    if not isinstance(address, str) or not ADDRESS.match(address):
        return address  # the field's validator says what is wrong
    try:
        return checksummed(address)
    except BadChecksum as exc:
        raise ValidationError({"address": str(exc)}) from None


SHA256_DIGEST = RegexValidator(r"\Asha256:[0-9a-f]{64}\Z", "sha256: and 64 lower-case hex digits")


class Principal(models.Model):
    """Someone (or something) acting in an organization root: ``human.joshua`` with a role,
    a membership status and how well their identity is assured."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    organization = models.ForeignKey("governance.Organization", on_delete=models.CASCADE, related_name="principals")
    principal_id = models.CharField(max_length=120, validators=[IDENTIFIER], help_text="e.g. human.joshua")
    display_name = models.CharField(max_length=200, blank=True)
    person = models.ForeignKey(
        "governance.Person",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="principals",
        help_text="The console account of this principal, if any.",
    )
    role = models.CharField(max_length=32, choices=PrincipalRole.choices, default=PrincipalRole.MEMBER)
    membership_status = models.CharField(
        max_length=16, choices=MembershipStatus.choices, default=MembershipStatus.ACTIVE
    )
    identity_assurance_level = models.CharField(
        max_length=32, choices=IdentityAssurance.choices, default=IdentityAssurance.SELF_ASSERTED
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["organization__name", "principal_id"]
        constraints = [
            models.UniqueConstraint(fields=["organization", "principal_id"], name="principal_id_unique_in_org")
        ]

    def __str__(self):
        return self.principal_id


class PrincipalWallet(models.Model):
    """A wallet of a principal: the ownership wallet signs in and installs; the payment
    wallet pays (they may differ)."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    principal = models.ForeignKey(Principal, on_delete=models.CASCADE, related_name="wallets")
    address = models.CharField(max_length=42, validators=[WALLET_ADDRESS], help_text="EIP-55 checksummed address.")
    purpose = models.CharField(max_length=16, choices=WalletPurpose.choices, default=WalletPurpose.OWNERSHIP)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["principal__principal_id", "purpose"]
        constraints = [
            models.UniqueConstraint(fields=["principal", "address", "purpose"], name="principal_wallet_unique")
        ]
        indexes = [models.Index(fields=["address"], name="governance_wallet_address")]

    def __str__(self):
        return f"{self.address} ({self.purpose})"

    def clean(self):
        self.address = checksummed_address(self.address)


class AccountWallet(models.Model):
    """A wallet linked to a console account: its owner may sign in to the web UI with it."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    person = models.ForeignKey("governance.Person", on_delete=models.CASCADE, related_name="linked_wallets")
    address = models.CharField(
        max_length=42, unique=True, validators=[WALLET_ADDRESS], help_text="EIP-55 checksummed address."
    )
    linked_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-linked_at"]

    def __str__(self):
        return self.address


class SignerKey(models.Model):
    """An external signer's Ed25519 public key, registered so packages it signed can be
    listed and verified; published with Mandate's own keys (``GET /governance/signer-keys``)."""

    key_id = models.CharField(
        max_length=80, unique=True, validators=[IDENTIFIER], help_text="e.g. governance-signer-2026-01"
    )
    public_key = models.CharField(max_length=64, help_text="The raw 32-byte Ed25519 public key, base64url (a JWK's x).")
    status = models.CharField(max_length=16, choices=SignerKeyStatus.choices, default=SignerKeyStatus.ACTIVE)
    description = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["key_id"]
        verbose_name = "external signer key"

    def __str__(self):
        return self.key_id


class RuntimePackage(models.Model):
    """A signed governed-runtime package for one platform and rollout channel."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    platform = models.CharField(max_length=40, validators=[IDENTIFIER], help_text="e.g. macos, windows, linux")
    rollout_channel = models.CharField(max_length=40, validators=[IDENTIFIER], default="stable")
    runtime_version = models.CharField(max_length=40)
    package_url = models.URLField(max_length=500)
    package_hash = models.CharField(max_length=71, validators=[SHA256_DIGEST])
    policy_hash = models.CharField(max_length=71, validators=[SHA256_DIGEST])
    signature = models.CharField(max_length=140, help_text="ed25519: and the hex signature of the descriptor.")
    signer_key_id = models.CharField(max_length=80)
    status = models.CharField(max_length=16, choices=PackageStatus.choices, default=PackageStatus.ACTIVE)
    created_by = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["platform", "rollout_channel", "-created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["platform", "rollout_channel", "runtime_version"], name="runtime_package_version_unique"
            )
        ]

    def __str__(self):
        return f"{self.runtime_version} {self.platform}/{self.rollout_channel}"


class Device(models.Model):
    """A device a wallet installed the governed runtime on, and its availability lease."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    device_id = models.CharField(max_length=120)
    wallet = models.CharField(max_length=42, help_text="The ownership wallet that installed it.")
    organization = models.ForeignKey("governance.Organization", on_delete=models.CASCADE, related_name="devices")
    principal = models.ForeignKey(Principal, on_delete=models.CASCADE, related_name="devices")
    platform = models.CharField(max_length=40)
    rollout_channel = models.CharField(max_length=40, default="stable")
    launcher_version = models.CharField(max_length=40, blank=True)
    runtime_version = models.CharField(max_length=40, blank=True, help_text="The runtime installed and active.")
    package = models.ForeignKey(RuntimePackage, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    policy_hash = models.CharField(max_length=71, blank=True)
    entitlement_id = models.CharField(max_length=64, blank=True)
    install_state = models.CharField(max_length=24, choices=InstallState.choices, default=InstallState.NOT_INSTALLED)
    availability_state = models.CharField(
        max_length=16, choices=AvailabilityState.choices, default=AvailabilityState.ACTIVE
    )
    access_class = models.CharField(max_length=16, choices=AccessClass.choices, default=AccessClass.CONNECTED)
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    last_heartbeat_at = models.DateTimeField(null=True, blank=True)
    activated_at = models.DateTimeField(null=True, blank=True)
    launcher_receipt_hash = models.CharField(max_length=71, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-updated_at"]
        constraints = [models.UniqueConstraint(fields=["wallet", "device_id"], name="device_unique_per_wallet")]
        indexes = [
            models.Index(
                fields=["lease_expires_at"],
                name="governance_device_lease",
                condition=models.Q(availability_state="active"),
            )
        ]

    def __str__(self):
        return self.device_id


class InstallToken(models.Model):
    """A single-use install token (``git_`` + ULID, 15 minutes), kept as its SHA-256 only."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    token_hash = models.CharField(max_length=64, unique=True, editable=False)
    organization = models.ForeignKey("governance.Organization", on_delete=models.CASCADE, related_name="+")
    principal = models.ForeignKey(Principal, on_delete=models.CASCADE, related_name="install_tokens")
    device = models.ForeignKey(Device, on_delete=models.CASCADE, related_name="install_tokens")
    wallet = models.CharField(max_length=42)
    entitlement_id = models.CharField(max_length=64)
    package = models.ForeignKey(RuntimePackage, on_delete=models.PROTECT, related_name="+")
    launcher_version = models.CharField(max_length=40)
    current_runtime_version = models.CharField(max_length=40, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField()
    used_at = models.DateTimeField(null=True, blank=True)
    installed_at = models.DateTimeField(null=True, blank=True)
    launcher_receipt_hash = models.CharField(max_length=71, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self):
        return f"install token {self.pk}"


class RenewalBundle(models.Model):
    """A signed offline renewal of the availability leases of one principal's devices
    (for one wallet, in one organization), applied at most once."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    bundle_id = models.CharField(max_length=40, unique=True, editable=False)
    organization = models.ForeignKey("governance.Organization", on_delete=models.CASCADE, related_name="+")
    principal = models.ForeignKey(Principal, on_delete=models.CASCADE, related_name="renewal_bundles")
    wallet = models.CharField(max_length=42)
    renewed_until = models.DateTimeField()
    valid_until = models.DateTimeField(help_text="The bundle must be applied before this.")
    signed_payload = models.TextField(editable=False)
    signing_key_id = models.CharField(max_length=80, editable=False)
    created_by = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    applied_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self):
        return self.bundle_id
