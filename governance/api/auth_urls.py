from django.urls import path

from governance.api.auth_views import ChangePasswordView, LoginView, LogoutView
from governance.api.wallet_login import WalletLinkView, WalletLoginView, WalletUnlinkView

urlpatterns = [
    path("login", LoginView.as_view(), name="auth-login"),
    path("logout", LogoutView.as_view(), name="auth-logout"),
    path("change-password", ChangePasswordView.as_view(), name="auth-change-password"),
    path("wallet/login", WalletLoginView.as_view(), name="auth-wallet-login"),
    path("wallet/link", WalletLinkView.as_view(), name="auth-wallet-link"),
    path("wallet/unlink", WalletUnlinkView.as_view(), name="auth-wallet-unlink"),
]
