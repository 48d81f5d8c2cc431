from django.urls import path

from entitlements.api import views

urlpatterns = [
    path("entitlement/issue", views.IssueView.as_view(), name="gbx-issue"),
    path("entitlement/check", views.CheckView.as_view(), name="gbx-check"),
    path("entitlement/consume", views.ConsumeView.as_view(), name="gbx-consume"),
    path("entitlement/run_start", views.RunStartView.as_view(), name="gbx-run-start"),
    path("entitlement/run_complete", views.RunCompleteView.as_view(), name="gbx-run-complete"),
    path("entitlement/runs/<str:run_id>/seal.zip", views.SealZipView.as_view(), name="gbx-seal-zip"),
    path("entitlement/redeem_seal_once", views.RedeemSealView.as_view(), name="gbx-redeem"),
    path("seal/verify", views.SealVerifyView.as_view(), name="gbx-seal-verify"),
]
