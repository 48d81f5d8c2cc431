"""Filters of the envelope lists (``GET /v1/envelopes``, ``GET /v1/escalations``).

``state`` is MIDAS's; ``agent_id``, ``surface_id``, ``outcome``, ``since`` and ``until`` are
Mandate's additions. A value a filter cannot take (an unknown state or outcome, a timestamp
that is not RFC 3339) is a 400 ``{"error": ...}``, never an empty list. ``since`` and
``until`` bound ``created_at`` and are both inclusive.
"""

import django_filters
from django import forms
from django.core.validators import RegexValidator

from envelopes.choices import EnvelopeState, Outcome
from envelopes.models import Envelope
from governance.api.errors import APIError
from governance.api.query_params import timestamp_param
from governance.control_characters import CONTROL_CHARACTERS


class RFC3339Field(forms.Field):
    """An RFC 3339 timestamp with an offset; the message is the shared query-parameter one."""

    def to_python(self, value):
        if value in self.empty_values:
            return None
        try:
            return timestamp_param(self.label or "timestamp", value)
        except APIError as exc:
            raise forms.ValidationError(str(exc.error)) from exc


class RFC3339Filter(django_filters.Filter):
    field_class = RFC3339Field


def text_filter(name: str) -> django_filters.CharFilter:
    """An exact match on an id column; control characters (which Postgres refuses as NUL) are a 400."""
    message = f"invalid {name}"
    return django_filters.CharFilter(
        field_name=name,
        max_length=255,
        validators=[RegexValidator(CONTROL_CHARACTERS, message, inverse_match=True)],
        error_messages={"max_length": message},
    )


def choice_filter(name: str, choices) -> django_filters.ChoiceFilter:
    message = f"invalid {name}: must be one of " + ", ".join(choices.values)
    return django_filters.ChoiceFilter(choices=choices.choices, error_messages={"invalid_choice": message})


class EnvelopeFilterSet(django_filters.FilterSet):
    """The filters every envelope list takes."""

    @property
    def error_message(self) -> str:
        """The form's errors as one line; each message names its parameter."""
        return "; ".join(message for messages in self.errors.values() for message in messages)

    agent_id = text_filter("agent_id")
    surface_id = text_filter("surface_id")
    outcome = choice_filter("outcome", Outcome)
    since = RFC3339Filter(field_name="created_at", lookup_expr="gte", label="since")
    until = RFC3339Filter(field_name="created_at", lookup_expr="lte", label="until")

    class Meta:
        model = Envelope
        fields = ["agent_id", "surface_id", "outcome", "since", "until"]


class EnvelopeStateFilterSet(EnvelopeFilterSet):
    """``GET /v1/envelopes``: also ``?state=`` (MIDAS's only filter)."""

    state = choice_filter("state", EnvelopeState)

    class Meta(EnvelopeFilterSet.Meta):
        fields = ["state", *EnvelopeFilterSet.Meta.fields]
