""" "Sign in with Ethereum" and "Link wallet" in a real browser, with a wallet injected into the
page: ``window.ethereum`` (EIP-1193) answers from a key made here, signing in Python."""

import json
import uuid

import pytest

from evidence.models import AdminAuditRecord
from governance.choices import Role
from governance.models import AccountWallet
from governance.services.people import create_person, ensure_organization
from governance.siwe import SiweMessage
from tests.browser import page  # noqa: F401  (fixture)
from tests.siwe_wallets import new_wallet, personal_sign

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

PASSWORD = "a-Long-enough-passw0rd"

# An EIP-1193 provider as a wallet extension injects it; personal_sign calls back into Python.
FAKE_WALLET = """
window.ethereum = {
  request: async ({ method, params }) => {
    if (method === "eth_requestAccounts") return [%s];
    if (method === "eth_chainId") return "0x1";
    if (method === "personal_sign") return await window.testWalletSign(params[0], params[1]);
    throw Object.assign(new Error("unsupported method " + method), { code: 4200 });
  },
};
"""


@pytest.fixture(autouse=True)
def _served_domain(settings, live_server):
    settings.PUBLIC_BASE_URL = live_server.url
    settings.MANDATE_SIWE_DOMAIN = ""
    settings.MANDATE_SIWE_CHAIN_IDS = [1]
    settings.MANDATE_WEB3_RPC_URL = ""
    settings.CACHES = {
        "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": uuid.uuid4().hex}
    }


@pytest.fixture
def dana():
    return create_person(ensure_organization("acme", "Acme"), "dana", password=PASSWORD, roles=[Role.PLATFORM_ADMIN])


def inject_wallet(tab, account) -> list[str]:
    """Give the tab a wallet holding ``account``; returns the list of messages it signs."""
    signed = []

    def sign(hex_message: str, address: str) -> str:
        assert address.lower() == account.address.lower()
        signed.append(bytes.fromhex(hex_message[2:]).decode())
        return personal_sign(account, hex_message)

    tab.expose_function("testWalletSign", sign)
    tab.add_init_script(FAKE_WALLET % json.dumps(account.address.lower()))
    return signed


def test_sign_in_with_ethereum_lands_the_linked_person_in_the_console(page, live_server, dana):  # noqa: F811
    account = new_wallet()
    AccountWallet.objects.create(person=dana, address=account.address)
    signed = inject_wallet(page, account)

    page.goto("/admin/")
    page.wait_for_url("**/accounts/login/?next=/admin/")
    page.get_by_role("button", name="Sign in with Ethereum").click()
    page.wait_for_url("**/admin/")

    assert page.locator("#user-tools").inner_text().upper().startswith("WELCOME, DANA")
    [message] = signed
    parsed = SiweMessage.parse(message)  # the script builds exactly what the grammar accepts
    host = live_server.url.split("://")[1]
    assert (parsed.domain, parsed.uri) == (host, f"{live_server.url}/accounts/login/")
    assert (parsed.address, parsed.chain_id, parsed.statement) == (account.address, 1, "Sign in to Mandate.")
    record = AdminAuditRecord.objects.get(action="wallet.signed_in")
    assert (record.outcome, record.actor_id) == ("success", str(dana.pk))


def test_unlinked_wallet_is_told_so_on_the_sign_in_page(page, dana):  # noqa: F811
    inject_wallet(page, new_wallet())
    page.goto("/accounts/login/")
    page.get_by_role("button", name="Sign in with Ethereum").click()
    status = page.locator(".wallet-sign-in .wallet-status")
    status.get_by_text("this wallet is not linked to any account").wait_for()
    assert "/accounts/login/" in page.url


def test_without_a_wallet_the_button_says_none_was_found(page):  # noqa: F811
    page.goto("/accounts/login/")
    page.get_by_role("button", name="Sign in with Ethereum").click()
    status = page.locator(".wallet-sign-in .wallet-status")
    status.get_by_text("No Ethereum wallet found in this browser").wait_for()
    assert status.is_visible()


def test_person_links_a_wallet_from_the_console_and_unlinks_it(page, dana):  # noqa: F811
    account = new_wallet()
    signed = inject_wallet(page, account)
    page.goto("/accounts/login/")
    page.fill("input[name=login]", "dana")
    page.fill("input[name=password]", PASSWORD)
    page.click("#login-form button[type=submit]")
    page.wait_for_url("**/admin/")

    page.locator("#user-tools").get_by_role("link", name="Wallets").click()
    page.wait_for_url("**/accounts/wallet/")
    assert page.locator("#no-linked-wallets").is_visible()
    page.get_by_role("button", name="Link wallet").click()
    page.locator("#linked-wallets").get_by_text(account.address).wait_for()

    assert AccountWallet.objects.get().person == dana
    assert SiweMessage.parse(signed[0]).uri.endswith("/accounts/wallet/")

    page.locator("#linked-wallets").get_by_role("button", name="Unlink").click()
    page.locator("#no-linked-wallets").wait_for()
    assert not AccountWallet.objects.exists()
    assert AdminAuditRecord.objects.filter(action__in=["wallet.linked", "wallet.unlinked"]).count() == 2
