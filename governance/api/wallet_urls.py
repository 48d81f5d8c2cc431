from django.urls import path

from governance.api.device_leases import HeartbeatView
from governance.api.installs import InstallConfirmView, InstallStatusView, InstallTokenView
from governance.api.renewals import OfflineRenewView, RenewalBundlesView, SignerKeysView
from governance.api.wallets import NonceView, VerifyView

urlpatterns = [
    path("auth/nonce", NonceView.as_view(), name="wallet-nonce"),
    path("auth/verify", VerifyView.as_view(), name="wallet-verify"),
    path("install/token", InstallTokenView.as_view(), name="install-token"),
    path("install/confirm", InstallConfirmView.as_view(), name="install-confirm"),
    path("install/status", InstallStatusView.as_view(), name="install-status"),
    path("lease/heartbeat", HeartbeatView.as_view(), name="lease-heartbeat"),
    path("lease/offline-renew", OfflineRenewView.as_view(), name="lease-offline-renew"),
    path("renewal-bundles", RenewalBundlesView.as_view(), name="renewal-bundles"),
    path("signer-keys", SignerKeysView.as_view(), name="signer-keys"),
]
