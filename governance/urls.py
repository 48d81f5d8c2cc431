from functools import cache

from django.conf import settings
from django.contrib import admin
from django.contrib.auth.views import redirect_to_login
from django.contrib.staticfiles import finders
from django.http import HttpResponse
from django.shortcuts import redirect, render
from django.urls import include, path, re_path
from django.views.decorators.http import require_safe
from django.views.generic import RedirectView
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from envelopes.requests.views import agents_page
from evidence.api.views import JWKSView
from governance.account_pages import wallets_page
from governance.api.leases import LeaseView
from governance.api.views import api_not_found, healthz, readyz

admin.site.site_header = "Mandate"
admin.site.site_title = "Mandate"
admin.site.index_title = "Governance"


def admin_login(request, extra_context=None):
    """The admin signs people in through allauth, so every login method (password,
    Google) and its policies apply to the inbox too."""
    if request.user.is_authenticated:
        if request.user.is_staff:
            return redirect("admin:index")
        return render(request, "admin/no_access.html", status=403)
    return redirect_to_login(request.GET.get("next") or "/admin/")


admin.site.login = admin_login


@require_safe
def front_door(request):
    """``/`` (the console's "View site"): the inbox for someone signed in, else sign-in."""
    return redirect("admin:index" if request.user.is_authenticated else settings.LOGIN_URL)


@cache
def favicon_bytes() -> bytes:
    with open(finders.find("mandate/favicon.ico"), "rb") as icon:
        return icon.read()


@require_safe
def favicon(request):
    """``/favicon.ico``, for browsers and tools that ask the site root rather than read the
    pages' ``<link rel="icon">``."""
    response = HttpResponse(favicon_bytes(), content_type="image/x-icon")
    response["Cache-Control"] = "public, max-age=86400"
    return response


handler500 = "governance.api.views.server_error"

urlpatterns = [
    path("", front_door, name="front-door"),
    path("favicon.ico", favicon, name="favicon"),
    path("healthz", healthz, name="healthz"),
    path("readyz", readyz, name="readyz"),
    path(".well-known/jwks.json", JWKSView.as_view(), name="jwks"),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="swagger-ui"),
    path("v1/leases", LeaseView.as_view(), name="gate-leases"),
    path("", include("envelopes.gate.api.urls")),
    path("v1/", include("evidence.api.urls")),
    path("v1/", include("controlplane.api.urls")),
    path("v1/", include("envelopes.evaluation.api.urls")),
    path("auth/", include("governance.api.auth_urls")),
    path("governance/", include("governance.api.wallet_urls")),
    path("accounts/wallet/", wallets_page, name="account_wallets"),
    path("accounts/", include("allauth.urls")),
    re_path(
        r"^admin/webhooks/?$",
        RedirectView.as_view(pattern_name="admin:envelopes_delivery_changelist", query_string=True),
        name="admin-webhooks",
    ),
    re_path(r"^agents/?$", agents_page, name="agents"),
    # One password change page, allauth's: it clears must_change_password and audits the change.
    path(
        "admin/password_change/",
        RedirectView.as_view(pattern_name="account_change_password"),
        name="admin-password-change",
    ),
    path("admin/", admin.site.urls),
    path("api/", include("entitlements.api.urls")),
    path("api/", include("envelopes.requests.api.urls")),
    # Unknown API routes answer the API's JSON error, not an HTML page.
    re_path(r"^(?:v1|api|governance|auth)(?:/.*)?$", api_not_found),
]
