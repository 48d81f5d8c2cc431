"""Wallets for tests: keys made here, EIP-4361 messages as the console's script builds them,
and EIP-191 (personal_sign) signatures."""

from django.utils import timezone
from eth_account import Account
from eth_account.messages import encode_defunct

from governance.siwe import format_message

SIGN_IN_PATH = "/accounts/login/"
LINK_PATH = "/accounts/wallet/"


def new_wallet():
    return Account.create()


def console_message(account, nonce: str, *, domain: str, path: str = SIGN_IN_PATH, scheme="https", **fields) -> str:
    """What static/mandate/wallet.js asks the wallet to sign (address lower-case, as wallets
    hand it out)."""
    values = {
        "domain": domain,
        "address": account.address.lower(),
        "statement": "Sign in to Mandate.",
        "uri": f"{scheme}://{domain}{path}",
        "chain_id": 1,
        "nonce": nonce,
        "issued_at": timezone.now(),
    }
    values.update(fields)
    return format_message(**values)


def sign(account, message: str) -> str:
    return "0x" + bytes(account.sign_message(encode_defunct(text=message)).signature).hex()


def personal_sign(account, hex_message: str) -> str:
    """``personal_sign`` as a wallet does it: EIP-191 over the bytes the page sent as hex."""
    return "0x" + bytes(account.sign_message(encode_defunct(hexstr=hex_message)).signature).hex()
