"""Ids the inbox reads from queries, forms and approval rules."""

import uuid


def is_uuid(value) -> bool:
    try:
        uuid.UUID(str(value))
    except ValueError:
        return False
    return True
