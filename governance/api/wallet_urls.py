from django.urls import path

from governance.api.wallets import NonceView, VerifyView

urlpatterns = [
    path("auth/nonce", NonceView.as_view(), name="wallet-nonce"),
    path("auth/verify", VerifyView.as_view(), name="wallet-verify"),
]
