"""Serializer fields the JSON APIs share.

MIDAS and AIOS Govern clients are typed decoders: a number where a string belongs is refused
there, so it is refused here too instead of being turned into text.
"""

from rest_framework import serializers

from governance.control_characters import has_control_characters


class JSONStringMixin:
    """Only a JSON string is a string here: numbers are not silently turned into text, as a
    typed decoder (MIDAS's) would refuse them too."""

    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


def _no_control_characters(value: str) -> None:
    if has_control_characters(value):
        raise serializers.ValidationError("must not contain control characters")


class IdentityField(serializers.CharField):
    """A person's identifier as MIDAS clients send it: 1–255 characters, no control characters."""

    def __init__(self, **kwargs):
        kwargs.setdefault("max_length", 255)
        kwargs.setdefault("validators", [_no_control_characters])
        super().__init__(**kwargs)


class StringField(JSONStringMixin, serializers.CharField):
    pass


class IdentityStringField(JSONStringMixin, IdentityField):
    pass


class UUIDStringField(JSONStringMixin, serializers.UUIDField):
    pass
