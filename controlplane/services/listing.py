"""Whole-organization lists of declared resources (``GET /v1/agents``, ``GET /v1/surfaces``).

They follow the rule of ``GET /v1/envelopes``: MIDAS clients read plain JSON arrays, so a
list without ``limit``/``cursor`` is one, but capped (a tenant's declarations grow); with
them it is a keyset page. Rows are ordered by id (``key``), unique within these querysets,
so the cursor is the last id of the page and pages never skip or repeat a row.
"""

from dataclasses import dataclass

from django.db.models import QuerySet

from controlplane.choices import is_resource_id
from governance.cursors import decode_cursor, encode_cursor
from governance.errors import Invalid

PLAIN_LIST_CAP = 1000  # as GET /v1/envelopes
DEFAULT_PAGE_SIZE = 50


@dataclass(frozen=True)
class Page:
    items: list
    next_cursor: str | None  # None on the last page


def capped_list(queryset: QuerySet) -> tuple[list, bool]:
    """The first ``PLAIN_LIST_CAP`` rows by id, and whether more exist. One query."""
    rows = list(queryset.order_by("key")[: PLAIN_LIST_CAP + 1])
    return rows[:PLAIN_LIST_CAP], len(rows) > PLAIN_LIST_CAP


def page_by_id(queryset: QuerySet, limit: int, cursor: str = "") -> Page:
    """The ``limit`` rows after ``cursor`` (ids ascending). One query."""
    if cursor:
        queryset = queryset.filter(key__gt=_last_id(cursor))
    rows = list(queryset.order_by("key")[: limit + 1])
    if len(rows) > limit:
        return Page(rows[:limit], encode_cursor([rows[limit - 1].key]))
    return Page(rows, None)


def _last_id(cursor: str) -> str:
    values = decode_cursor(cursor)
    if len(values) != 1 or not is_resource_id(values[0]):
        raise Invalid("invalid cursor")
    return values[0]
