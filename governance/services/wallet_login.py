"""Wallets linked to console accounts: linking one by signing a Sign-In with Ethereum message,
unlinking it, and signing in to the web UI with it (docs/wallets.md, "Signing in to the
console with a wallet").

The message is verified as a launcher's is (``wallet_sessions.verify_signed_message``) and
must name the page it was made for as its URI: the sign-in page to sign in, the wallets page
to link. Once the signature verifies, the nonce is spent whatever the answer, in the same
transaction as the link or the audit record, so a signed message is good for one attempt.
"""

import re
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
from governance.services.wallet_sessions import SignedMessage, SignInRefused, spend_nonce, verify_signed_message
from governance.siwe import checksum_address

ADDRESS = re.compile(r"0x[0-9a-fA-F]{40}")


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


def _verified_for(text, signature, uri_path: str, now: datetime) -> SignedMessage:
    """A verified message made for ``uri_path``: a launcher's message (or a link message)
    cannot sign anyone in to the console, nor a sign-in message link a wallet."""
    signed = verify_signed_message(text, signature, now)
    if urlsplit(signed.message.uri).path != uri_path:
        raise SignInRefused("uri_mismatch", f"the message is for {signed.message.uri!r}, not for {uri_path!r}")
    return signed


def _audit(action: str, *, outcome="success", actor: Person | None, wallet: str, organization_id, details, meta):
    record_admin_action(
        action=action,
        outcome=outcome,
        actor_type="user" if actor else "wallet",
        actor_id=str(actor.pk) if actor else wallet,
        organization_id=organization_id,
        target_type="wallet",
        target_id=wallet,
        request_id=meta.get("request_id", ""),
        client_ip=meta.get("client_ip", ""),
        details=details,
    )


def sign_in_with_wallet(text, signature, *, now: datetime | None = None, request_id="", client_ip="") -> Person:
    """The active person whose linked wallet signed ``text`` for the sign-in page.

    Refusals: the verification's codes (``wallet_sessions.SignInRefused``), then
    ``wallet_not_linked`` and ``account_inactive`` (those two spend the nonce and leave a
    ``failure`` record). The caller starts the session.
    """
    now = now or timezone.now()
    signed = _verified_for(text, signature, sign_in_uri_path(), now)
    address = signed.message.address
    meta = {"request_id": request_id, "client_ip": client_ip}
    details = {"chain_id": signed.message.chain_id, "contract_wallet": signed.contract_wallet}
    refusal = None
    with transaction.atomic():
        spend_nonce(signed.nonce_hash, now)
        link = AccountWallet.objects.select_related("person").filter(address=address).first()
        person = link.person if link else None
        if person is None:
            refusal = SignInRefused("wallet_not_linked", "this wallet is not linked to any account")
        elif not person.is_active:
            refusal = SignInRefused("account_inactive", "the account this wallet is linked to is deactivated")
        _audit(
            "wallet.signed_in",
            outcome="failure" if refusal else "success",
            actor=person if refusal is None else None,
            wallet=address,
            organization_id=person.organization_id if person else None,
            details={**details, "reason": refusal.code} if refusal else details,
            meta=meta,
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
    signed = _verified_for(text, signature, link_uri_path(), now)
    address = signed.message.address
    meta = {"request_id": request_id, "client_ip": client_ip}
    details = {"chain_id": signed.message.chain_id, "contract_wallet": signed.contract_wallet}
    refusal = None
    with transaction.atomic():
        spend_nonce(signed.nonce_hash, now)
        # get_or_create: of two people linking one wallet at once, the unique address lets one win.
        wallet, created = AccountWallet.objects.get_or_create(address=address, defaults={"person": person})
        if wallet.person_id != person.pk:
            refusal = SignInRefused("wallet_linked_to_another_account", "this wallet is linked to another account")
            details = {**details, "reason": refusal.code}
        if created or refusal:
            _audit(
                "wallet.linked",
                outcome="failure" if refusal else "success",
                actor=person,
                wallet=address,
                organization_id=person.organization_id,
                details=details,
                meta=meta,
            )
    if refusal:
        raise refusal
    return WalletLink(wallet=wallet, created=created)


def parse_address(address) -> str:
    """A ``0x`` + 40 hex digit address, EIP-55 checksummed."""
    if not isinstance(address, str) or not ADDRESS.fullmatch(address):
        raise Invalid("must be 0x and 40 hex digits", field="wallet")
    return checksum_address(address)


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
            meta={"request_id": request_id, "client_ip": client_ip},
        )
    return checksummed
