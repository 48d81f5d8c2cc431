"""Wallet sessions: Sign-In with Ethereum (EIP-4361) turns a signed message into a bearer
credential bound to the wallet (docs/wallets.md).

A nonce is issued, stored hashed, and spent by the one sign-in that verifies: cheap checks
(grammar, domain, chain, times) first, then the signature (~0.3 ms with coincurve), and only
then one statement that spends the nonce and inserts the session together — so of two
parallel sign-ins with one nonce exactly one wins, a failed sign-in leaves the nonce usable,
and the happy path is one round trip to Postgres. Why a nonce was unusable is read only
when it was.
"""

import logging
import secrets
import string
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import NoReturn
from urllib.parse import urlsplit

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone
from eth_account import Account
from eth_account.messages import defunct_hash_message, encode_defunct

from governance.choices import TokenStatus
from governance.errors import DomainError
from governance.models import SiweNonce, WalletSession
from governance.secret_hashing import hash_secret, secret_matches
from governance.siwe import BadChecksum, MalformedMessage, SiweMessage

logger = logging.getLogger(__name__)

SESSION_SCHEME = "mws"
NONCE_ALPHABET = string.ascii_letters + string.digits
NONCE_LENGTH = 24  # ~143 bits; EIP-4361 asks for at least 8 alphanumerics
MAX_SIGNATURE_BYTES = 4096  # an EOA signature is 65 bytes; contract wallets may send more
EIP1271_MAGIC_VALUE = bytes.fromhex("1626ba7e")
EIP1271_ABI = [
    {
        "name": "isValidSignature",
        "type": "function",
        "stateMutability": "view",
        "inputs": [{"name": "hash", "type": "bytes32"}, {"name": "signature", "type": "bytes"}],
        "outputs": [{"name": "magicValue", "type": "bytes4"}],
    }
]


class SignInRefused(DomainError):
    """A sign-in that does not go ahead; ``code`` is the wire's (docs/wallets.md lists them)."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class IssuedNonce:
    nonce: str
    expires_at: datetime


@dataclass(frozen=True)
class SignIn:
    session: WalletSession
    secret: str  # the bearer value, shown once


def expected_domain() -> str:
    """``MANDATE_SIWE_DOMAIN``, else ``PUBLIC_BASE_URL``'s host[:port]."""
    return settings.MANDATE_SIWE_DOMAIN or urlsplit(settings.PUBLIC_BASE_URL).netloc


def issue_nonce() -> IssuedNonce:
    nonce = "".join(secrets.choice(NONCE_ALPHABET) for _ in range(NONCE_LENGTH))
    expires_at = timezone.now() + timedelta(seconds=settings.MANDATE_SIWE_NONCE_TTL_SECONDS)
    SiweNonce.objects.create(nonce_hash=hash_secret(nonce), expires_at=expires_at)
    return IssuedNonce(nonce=nonce, expires_at=expires_at)


def purge_spent_nonces(now: datetime | None = None) -> int:
    """Delete nonces past their expiry (used or not): they can never verify again."""
    deleted, _ = SiweNonce.objects.filter(expires_at__lte=now or timezone.now()).delete()
    return deleted


def parse_signature(signature) -> bytes:
    if not isinstance(signature, str) or not signature.startswith("0x"):
        raise SignInRefused("signature_malformed", "signature must be 0x-prefixed hex")
    digits = signature[2:]
    if len(digits) % 2 or len(digits) > 2 * MAX_SIGNATURE_BYTES or not digits:
        raise SignInRefused("signature_malformed", f"signature must be 1..{MAX_SIGNATURE_BYTES} bytes of hex")
    try:
        return bytes.fromhex(digits)
    except ValueError:
        raise SignInRefused("signature_malformed", "signature must be 0x-prefixed hex") from None


def check_message(message: SiweMessage, now: datetime) -> None:
    """Everything about the message that needs neither the database nor the signature."""
    domain = expected_domain().lower()  # host names are case-insensitive (RFC 3986)
    if message.domain.lower() != domain:
        raise SignInRefused("domain_mismatch", f"message is for {message.domain!r}, this service is {domain!r}")
    if message.scheme is not None and message.scheme.lower() != urlsplit(settings.PUBLIC_BASE_URL).scheme:
        raise SignInRefused("domain_mismatch", f"message names scheme {message.scheme!r}")
    if (message.uri_authority or "").lower() != domain:
        raise SignInRefused("uri_mismatch", f"URI {message.uri!r} is not on {domain!r}")
    if message.chain_id not in settings.MANDATE_SIWE_CHAIN_IDS:
        accepted = ", ".join(str(chain_id) for chain_id in settings.MANDATE_SIWE_CHAIN_IDS)
        raise SignInRefused("chain_not_allowed", f"Chain ID {message.chain_id} is not accepted (accepted: {accepted})")
    skew = timedelta(seconds=settings.MANDATE_SIWE_CLOCK_SKEW_SECONDS)
    if message.issued_at > now + skew:
        raise SignInRefused("issued_in_future", "Issued At is in the future")
    if message.expiration_time is not None and message.expiration_time <= now:
        raise SignInRefused("message_expired", "Expiration Time has passed")
    if message.not_before is not None and message.not_before > now + skew:
        raise SignInRefused("message_not_yet_valid", "Not Before is in the future")


def check_nonce(nonce_hash: str, now: datetime) -> None:
    """The nonce was issued here, is unused and unexpired (a read: spending comes last)."""
    row = SiweNonce.objects.filter(nonce_hash=nonce_hash).values_list("expires_at", "used_at").first()
    if row is None:
        raise SignInRefused("nonce_unknown", "nonce was not issued by this service")
    expires_at, used_at = row
    if used_at is not None:
        raise SignInRefused("nonce_used", "nonce has already been used")
    if expires_at <= now:
        raise SignInRefused("nonce_expired", "nonce has expired; ask for a new one")


def contract_wallet_accepts(address: str, message_hash: bytes, signature: bytes) -> bool:
    """EIP-1271: the contract at ``address`` answers ``isValidSignature`` with the magic value.
    Only with ``MANDATE_WEB3_RPC_URL``; an unreachable node is ``wallet_rpc_unavailable``."""
    from web3 import Web3

    provider = Web3.HTTPProvider(
        settings.MANDATE_WEB3_RPC_URL,
        request_kwargs={"timeout": settings.MANDATE_WEB3_RPC_TIMEOUT_SECONDS},
        exception_retry_configuration=None,  # a sign-in waits for one answer, not for retries
    )
    web3 = Web3(provider)
    try:
        if not web3.eth.get_code(address):
            return False  # no contract there: an EOA whose signature did not recover
        answer = (
            web3.eth.contract(address=address, abi=EIP1271_ABI)
            .functions.isValidSignature(message_hash, signature)
            .call()
        )
    except Exception as exc:  # a revert means "not valid"; anything else is the node's failure
        from web3.exceptions import ContractLogicError

        if isinstance(exc, ContractLogicError):
            return False
        logger.warning("EIP-1271 call to %s failed: %s", address, exc)
        raise SignInRefused("wallet_rpc_unavailable", "the wallet's contract could not be asked") from None
    return bytes(answer) == EIP1271_MAGIC_VALUE


def recover_signer(text: str, signature: bytes) -> str | None:
    """The EIP-191 (``personal_sign``) signer of ``text``, or None when nothing recovers."""
    try:
        return Account.recover_message(encode_defunct(text=text), signature=signature)
    except Exception as exc:  # eth-keys raises several kinds for a signature off the curve
        logger.debug("signature recovers no key: %s", exc)
        return None


def signed_by_contract(message: SiweMessage, text: str, signature: bytes, before_rpc=lambda: None) -> bool:
    """Whether the message's address signed ``text`` (EIP-191): False when the signature
    recovers to it (an EOA), True when its contract accepts it (EIP-1271, only with
    ``MANDATE_WEB3_RPC_URL``; ``before_rpc`` runs first, so an unusable nonce costs no RPC
    call); ``signature_invalid`` otherwise."""
    if len(signature) == 65 and recover_signer(text, signature) == message.address:
        return False
    if (
        settings.MANDATE_WEB3_RPC_URL
        and before_rpc() is None
        and contract_wallet_accepts(message.address, bytes(defunct_hash_message(text=text)), signature)
    ):
        return True
    raise SignInRefused("signature_invalid", "signature is not the address's")


@dataclass(frozen=True)
class SignedMessage:
    """An EIP-4361 message whose fields and signature verified; its nonce not yet spent."""

    message: SiweMessage
    nonce_hash: str
    contract_wallet: bool


def verify_signed_message(text, signature, now: datetime) -> SignedMessage:
    """Every check but spending the nonce: the grammar, domain, URI, chain, times, and the
    signature (EIP-191, else EIP-1271). The caller spends the nonce with what it writes."""
    try:
        message = SiweMessage.parse(text)
    except BadChecksum as exc:
        raise SignInRefused("address_checksum_invalid", str(exc)) from None
    except MalformedMessage as exc:
        raise SignInRefused("message_malformed", str(exc)) from None
    signature_bytes = parse_signature(signature)
    check_message(message, now)
    nonce_hash = hash_secret(message.nonce)
    by_contract = signed_by_contract(message, text, signature_bytes, lambda: check_nonce(nonce_hash, now))
    return SignedMessage(message=message, nonce_hash=nonce_hash, contract_wallet=by_contract)


def spend_nonce(nonce_hash: str, now: datetime) -> None:
    """Mark the nonce used, in the caller's transaction; of parallel spends of one nonce the
    row lock lets exactly one UPDATE match. Refuses with why when it is not spendable."""
    if not SiweNonce.objects.filter(nonce_hash=nonce_hash, used_at__isnull=True, expires_at__gt=now).update(
        used_at=now
    ):
        refuse_unspendable_nonce(nonce_hash, now)


def refuse_unspendable_nonce(nonce_hash: str, now: datetime) -> NoReturn:
    """Why a nonce could not be spent: unknown, used or expired."""
    check_nonce(nonce_hash, now)
    raise SignInRefused("nonce_used", "nonce has already been used")  # spent since the check


def verify_sign_in(text, signature, now: datetime | None = None) -> SignIn:
    """Verify a signed EIP-4361 message; spend its nonce and open a wallet session."""
    now = now or timezone.now()
    signed = verify_signed_message(text, signature, now)
    message, nonce_hash, by_contract = signed.message, signed.nonce_hash, signed.contract_wallet

    expires_at = now + timedelta(seconds=settings.MANDATE_WALLET_SESSION_TTL_SECONDS)
    if message.expiration_time is not None:
        expires_at = min(expires_at, message.expiration_time)
    prefix = secrets.token_hex(6)
    secret = f"{SESSION_SCHEME}_{prefix}_{secrets.token_urlsafe(32)}"
    session = WalletSession(
        id=uuid.uuid4(),
        wallet=message.address,
        chain_id=message.chain_id,
        domain=message.domain,
        prefix=prefix,
        secret_hash=hash_secret(secret),
        status=TokenStatus.ACTIVE,
        contract_wallet=by_contract,
        created_at=now,
        expires_at=expires_at,
    )
    if not open_session_spending_nonce(session, nonce_hash, now):
        refuse_unspendable_nonce(nonce_hash, now)
    return SignIn(session=session, secret=secret)


# One statement on PostgreSQL (SQLite has no UPDATE in a WITH: there, a transaction).
_OPEN_SESSION_SQL = """
WITH spent AS (
    UPDATE governance_siwenonce SET used_at = %s
    WHERE nonce_hash = %s AND used_at IS NULL AND expires_at > %s
    RETURNING 1
)
INSERT INTO governance_walletsession
    (id, wallet, chain_id, domain, prefix, secret_hash, status, contract_wallet, created_at, expires_at)
SELECT %s, %s, %s, %s, %s, %s, %s, %s, %s, %s FROM spent
"""


def open_session_spending_nonce(session: WalletSession, nonce_hash: str, now: datetime) -> bool:
    """Spend the nonce and insert the session together (on PostgreSQL in one statement, one
    round trip): of parallel sign-ins with one nonce, the row lock lets exactly one UPDATE
    match. False when the nonce was not spendable (nothing written)."""
    if connection.vendor != "postgresql":
        with transaction.atomic():
            if not SiweNonce.objects.filter(nonce_hash=nonce_hash, used_at__isnull=True, expires_at__gt=now).update(
                used_at=now
            ):
                return False
            session.save(force_insert=True)
        return True
    columns = (session.id, session.wallet, session.chain_id, session.domain, session.prefix, session.secret_hash)
    with connection.cursor() as cursor:
        cursor.execute(
            _OPEN_SESSION_SQL,
            [now, nonce_hash, now, *columns, session.status, session.contract_wallet, now, session.expires_at],
        )
        opened = cursor.rowcount == 1
    session._state.adding = False
    return opened


def authenticate_wallet_session(secret: str) -> WalletSession | None:
    """The active, unexpired session whose secret this is, or None (constant-time compare)."""
    parts = secret.split("_", 2)
    if len(parts) != 3 or parts[0] != SESSION_SCHEME:
        return None
    session = WalletSession.objects.filter(prefix=parts[1]).first()
    if not secret_matches(secret, session.secret_hash if session else None):
        return None
    if session.status != TokenStatus.ACTIVE or session.expires_at <= timezone.now():
        return None
    return session


@transaction.atomic
def revoke_wallet_session(session: WalletSession) -> WalletSession:
    if session.status != TokenStatus.REVOKED:
        session.status = TokenStatus.REVOKED
        session.revoked_at = timezone.now()
        session.save(update_fields=["status", "revoked_at"])
    return session


@transaction.atomic
def revoke_wallet_sessions(wallet: str) -> int:
    """Revoke every active session of a wallet (any capitalization); returns how many."""
    return WalletSession.objects.filter(wallet__iexact=wallet, status=TokenStatus.ACTIVE).update(
        status=TokenStatus.REVOKED, revoked_at=timezone.now()
    )
