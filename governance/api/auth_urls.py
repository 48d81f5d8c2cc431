from django.urls import path

from governance.api.auth_views import ChangePasswordView, LoginView, LogoutView

urlpatterns = [
    path("login", LoginView.as_view(), name="auth-login"),
    path("logout", LogoutView.as_view(), name="auth-logout"),
    path("change-password", ChangePasswordView.as_view(), name="auth-change-password"),
]
