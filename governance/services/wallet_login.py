"""Wallets linked to console accounts: linking one by signing a Sign-In with Ethereum message,
unlinking it, and signing in to the web UI with it (docs/wallets.md, "Signing in to the
console with a wallet").

The message is verified as a launcher's is (``wallet_sessions.verify_signed_message``) and
must name the page it was made for as its URI: the sign-in page to sign in, the wallets page
to link. Once the signature verifies, the nonce is spent whatever the answer, in the same
transaction as the link or the audit record, so a signed message is good for one attempt.
"""

from dataclasses import dataclass
from datetime import datetime
from urllib.parse import urlsplit

from django.conf import settings
from django.db import transaction
from django.shortcuts import resolve_url
from django.urls import reverse
from django.utils import timezone

from governance.audit import record_admin_action
from governance.errors import Invalid, NotFound
from governance.models import AccountWallet, Person
from governance.models.installs import ADDRESS
from governance.services.wallet_sessions import SignedMessage, SignInRefused, spend_nonce, verify_signed_message
from governance.siwe import BadChecksum, checksummed


@dataclass(frozen=True)
class WalletLink:
    wallet: AccountWallet
    created: bool  # False: the wallet was already linked to this person


def sign_in_uri_path() -> str:
    """The URI path a console sign-in message names: the sign-in page's."""
    return resolve_url(settings.LOGIN_URL)


def link_uri_path() -> str:
    """The URI path a link message names: the wallets page's."""
    return reverse("account_wallets")


def linked_wallets(person: Person) -> list[AccountWallet]:
    return list(person.linked_wallets.order_by("-linked_at"))


def _audit(
    action: str,
    *,
    actor: Person | None,
    wallet: str,
    organization_id,
    details,
    request_id,
    client_ip,
    outcome="success",
):
    """One admin-audit record about ``wallet``; with no ``actor`` (nobody signed in), the wallet acts."""
    record_admin_action(
        action=action,
        outcome=outcome,
        actor_type="user" if actor else "wallet",
        actor_id=str(actor.pk) if actor else wallet,
        organization_id=organization_id,
        target_type="wallet",
        target_id=wallet,
        request_id=request_id,
        client_ip=client_ip,
        details=details,
    )


@dataclass(frozen=True)
class _Attempt:
    """A message verified for one page, and where it came from (for the audit record)."""

    signed: SignedMessage
    request_id: str
    client_ip: str

    @classmethod
    def verify(cls, text, signature, uri_path: str, now: datetime, request_id: str, client_ip: str) -> "_Attempt":
        """A launcher's message (or a link message) cannot sign anyone in to the console, nor
        a sign-in message link a wallet: the URI must be ``uri_path``'s page."""
        signed = verify_signed_message(text, signature, now)
        if urlsplit(signed.message.uri).path != uri_path:
            raise SignInRefused("uri_mismatch", f"the message is for {signed.message.uri!r}, not for {uri_path!r}")
        return cls(signed=signed, request_id=request_id, client_ip=client_ip)

    @property
    def address(self) -> str:
        return self.signed.message.address

    def record(self, action: str, *, actor: Person | None, organization_id, refusal: SignInRefused | None) -> None:
        details = {"chain_id": self.signed.message.chain_id, "contract_wallet": self.signed.contract_wallet}
        if refusal:
            details["reason"] = refusal.code
        _audit(
            action,
            outcome="failure" if refusal else "success",
            actor=actor,
            wallet=self.address,
            organization_id=organization_id,
            details=details,
            request_id=self.request_id,
            client_ip=self.client_ip,
        )


def sign_in_with_wallet(text, signature, *, now: datetime | None = None, request_id="", client_ip="") -> Person:
    """The active person whose linked wallet signed ``text`` for the sign-in page.

    Refusals: the verification's codes (``wallet_sessions.SignInRefused``), then
    ``wallet_not_linked`` and ``account_inactive`` (those two spend the nonce and leave a
    ``failure`` record). The caller starts the session.
    """
    now = now or timezone.now()
    attempt = _Attempt.verify(text, signature, sign_in_uri_path(), now, request_id, client_ip)
    refusal = None
    with transaction.atomic():
        spend_nonce(attempt.signed.nonce_hash, now)
        link = AccountWallet.objects.select_related("person").filter(address=attempt.address).first()
        person = link.person if link else None
        if person is None:
            refusal = SignInRefused("wallet_not_linked", "this wallet is not linked to any account")
        elif not person.is_active:
            refusal = SignInRefused("account_inactive", "the account this wallet is linked to is deactivated")
        attempt.record(
            "wallet.signed_in",
            actor=None if refusal else person,
            organization_id=person.organization_id if person else None,
            refusal=refusal,
        )
    if refusal:
        raise refusal
    return person


def link_wallet(
    person: Person, text, signature, *, now: datetime | None = None, request_id="", client_ip=""
) -> WalletLink:
    """Link the wallet that signed ``text`` (for the wallets page) to ``person``. Linking it
    again is a no-op; a wallet linked to someone else is ``wallet_linked_to_another_account``."""
    now = now or timezone.now()
    attempt = _Attempt.verify(text, signature, link_uri_path(), now, request_id, client_ip)
    refusal = None
    with transaction.atomic():
        spend_nonce(attempt.signed.nonce_hash, now)
        # get_or_create: of two people linking one wallet at once, the unique address lets one win.
        wallet, created = AccountWallet.objects.get_or_create(address=attempt.address, defaults={"person": person})
        if wallet.person_id != person.pk:
            refusal = SignInRefused("wallet_linked_to_another_account", "this wallet is linked to another account")
        if created or refusal:
            attempt.record("wallet.linked", actor=person, organization_id=person.organization_id, refusal=refusal)
    if refusal:
        raise refusal
    return WalletLink(wallet=wallet, created=created)


def parse_address(address) -> str:
    """A ``0x`` + 40 hex digit address (lower, upper or EIP-55 case), EIP-55 checksummed."""
    if not isinstance(address, str) or not ADDRESS.match(address):
        raise Invalid("must be 0x and 40 hex digits", field="wallet")
    try:
        return checksummed(address)
    except BadChecksum as exc:
        raise Invalid(str(exc), field="wallet") from None


def unlink_wallet(person: Person, address, *, by: Person | None = None, request_id="", client_ip="") -> str:
    """Unlink ``address`` from ``person`` (``by``: an admin doing it for them); returns the
    checksummed address. Not linked to this person: ``NotFound``."""
    checksummed = parse_address(address)
    actor = by or person
    with transaction.atomic():
        deleted, _ = AccountWallet.objects.filter(person=person, address=checksummed).delete()
        if not deleted:
            raise NotFound("this wallet is not linked to the account")
        _audit(
            "wallet.unlinked",
            actor=actor,
            wallet=checksummed,
            organization_id=person.organization_id,
            details={"person": str(person.pk)} if actor.pk != person.pk else {},
            request_id=request_id,
            client_ip=client_ip,
        )
    return checksummed
