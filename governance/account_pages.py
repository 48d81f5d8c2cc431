"""``/accounts/wallet/``: a signed-in person's linked wallets, where "Link wallet" links one
(the page's script signs a Sign-In with Ethereum message; docs/wallets.md)."""

from django.contrib.auth.decorators import login_required
from django.shortcuts import render
from django.views.decorators.http import require_safe

from governance.services.wallet_login import linked_wallets


@require_safe
@login_required
def wallets_page(request):
    return render(request, "account/wallets.html", {"wallets": linked_wallets(request.user)})
