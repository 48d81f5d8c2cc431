"""Who holds or uses an entitlement: a principal of an organization, as the API edge
authenticated it (an OIDC ID token's email or subject, a Mandate person or agent)."""

import re
from dataclasses import dataclass

from governance.errors import Invalid

MAX_PRINCIPAL = 320
PLAN_ID = re.compile(r"\A[A-Za-z0-9][A-Za-z0-9._:-]{0,99}\Z")
RUN_ID = re.compile(r"\A[A-Za-z0-9][A-Za-z0-9._:/@+-]{0,199}\Z")
CONTROL = re.compile(r"[\x00-\x1f\x7f]")


@dataclass(frozen=True)
class Holder:
    organization_id: str
    principal: str
    performer_type: str = "principal"  # how the evidence names who acted


def principal_value(value, field: str = "principal") -> str:
    """A principal as stored: trimmed; an email lower-cased (mailboxes compare that way)."""
    if not isinstance(value, str) or not value.strip():
        raise Invalid("must be a non-empty string", field=field)
    value = value.strip()
    if len(value) > MAX_PRINCIPAL or CONTROL.search(value):
        raise Invalid(f"must be at most {MAX_PRINCIPAL} printable characters", field=field)
    return value.lower() if "@" in value else value


def run_id_value(value) -> str:
    if not isinstance(value, str) or not RUN_ID.match(value):
        raise Invalid(
            "must be 1 to 200 characters: letters, digits and . _ : / @ + -, starting alphanumeric", field="run_id"
        )
    return value


def plan_id_value(value) -> str:
    if not isinstance(value, str) or not PLAN_ID.match(value):
        raise Invalid("must be 1 to 100 characters: letters, digits and . _ : -", field="plan_id")
    return value
