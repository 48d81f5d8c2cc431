"""``{% wallet_button "login" %}`` and ``{% wallet_button "link" %}``: the "Sign in with
Ethereum" and "Link wallet" buttons, with what static/mandate/wallet.js needs to build the
EIP-4361 message the server expects (docs/wallets.md)."""

from django import template
from django.conf import settings
from django.urls import reverse
from django.utils.translation import gettext_lazy as _

from governance.services.wallet_login import link_uri_path, sign_in_uri_path

register = template.Library()

ACTIONS = {
    "login": (_("Sign in with Ethereum"), "Sign in to Mandate.", "auth-wallet-login", sign_in_uri_path),
    "link": (_("Link wallet"), "Link this wallet to your Mandate account.", "auth-wallet-link", link_uri_path),
}


@register.inclusion_tag("account/snippets/wallet_button.html", takes_context=True)
def wallet_button(context, action: str):
    label, statement, post_url_name, uri_path = ACTIONS[action]
    return {
        "action": action,
        "label": label,
        "statement": statement,
        "post_url": reverse(post_url_name),
        "nonce_url": reverse("wallet-nonce"),
        "uri_path": uri_path(),
        "chain_ids": ",".join(str(chain_id) for chain_id in settings.MANDATE_SIWE_CHAIN_IDS),
        "next": context.get("redirect_field_value") or "",
        "csrf_token": context.get("csrf_token"),
    }
