from django import forms

from governance.choices import Role
from governance.models import ApiToken


class ApiTokenForm(forms.ModelForm):
    roles = forms.MultipleChoiceField(choices=Role.choices, widget=forms.CheckboxSelectMultiple)

    class Meta:
        model = ApiToken
        fields = ("name", "principal", "roles", "expires_at")
