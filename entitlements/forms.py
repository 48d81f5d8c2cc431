from django import forms

from entitlements.services.issuance import MAX_RUNS_PER_ISSUE


class IssueRunsForm(forms.Form):
    """The console's "Issue runs": what ``POST /api/entitlement/issue`` takes."""

    principal = forms.CharField(max_length=320, help_text="The customer's email (their ID token's email) or subject.")
    plan_id = forms.CharField(max_length=100, initial="gbx_standard")
    runs_total = forms.IntegerField(min_value=1, max_value=MAX_RUNS_PER_ISSUE, label="Runs to add")
    expires_at = forms.DateTimeField(
        help_text="UTC, e.g. 2027-06-30 23:59. Issuing again to the same principal and plan adds "
        "the runs and keeps the later expiry.",
    )


class IssuanceTokenForm(forms.Form):
    name = forms.CharField(max_length=200, help_text="Who will hold it, e.g. the partner's billing system.")
