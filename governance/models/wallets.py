import uuid

from django.db import models

from governance.choices import TokenStatus


class SiweNonce(models.Model):
    """A nonce handed out for one Sign-In with Ethereum message. Only its SHA-256 is kept
    (like every secret a caller presents); ``used_at`` is set once, by the sign-in it served."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    nonce_hash = models.CharField(max_length=64, unique=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField()
    used_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        verbose_name = "SIWE nonce"
        indexes = [models.Index(fields=["expires_at"], name="governance_siwe_nonce_expiry")]

    def __str__(self):
        return f"nonce {self.nonce_hash[:12]}…"


class WalletSession(models.Model):
    """A bearer credential bound to a wallet, issued after a verified SIWE message.

    The secret looks like ``mws_<prefix>_<random>``; ``prefix`` finds the row, then the
    SHA-256 of the secret is compared in constant time (as ``ApiToken``)."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    wallet = models.CharField(max_length=42, db_index=True, help_text="EIP-55 checksummed address.")
    chain_id = models.PositiveBigIntegerField()
    domain = models.CharField(max_length=255)
    prefix = models.CharField(max_length=16, unique=True, editable=False)
    secret_hash = models.CharField(max_length=64, editable=False)
    status = models.CharField(max_length=16, choices=TokenStatus.choices, default=TokenStatus.ACTIVE)
    contract_wallet = models.BooleanField(default=False, help_text="Verified with EIP-1271.")
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField()
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        verbose_name = "wallet session"

    def __str__(self):
        return f"{self.wallet} (mws_{self.prefix}_…)"
