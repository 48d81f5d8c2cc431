from allauth.account.adapter import DefaultAccountAdapter
from allauth.socialaccount.adapter import DefaultSocialAccountAdapter


class MandateAccountAdapter(DefaultAccountAdapter):
    """People are created by admins, never by open sign-up."""

    def is_open_for_signup(self, request):
        return False


class MandateSocialAccountAdapter(DefaultSocialAccountAdapter):
    """Google sign-in connects to people who already exist; it does not create accounts."""

    def is_open_for_signup(self, request, sociallogin):
        return False
