"""Control characters (U+0000–U+001F and U+007F), refused in the ids and names callers send:
Postgres refuses NUL outright, and the others hide in logs, audit records and pages."""

import re

# The character class, for patterns that refuse more than control characters.
CONTROL_CHARACTER_RANGE = r"\x00-\x1f\x7f"
CONTROL_CHARACTERS = re.compile(f"[{CONTROL_CHARACTER_RANGE}]")


def has_control_characters(value: str) -> bool:
    return CONTROL_CHARACTERS.search(value) is not None
