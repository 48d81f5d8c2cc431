"""How every whole-organization list answers (``GET /v1/envelopes``, ``/v1/agents``,
``/v1/surfaces``): without ``limit``/``cursor`` a plain JSON array, capped, with
``X-Mandate-Truncated: true`` when more exist; with either, one keyset page
``{"items", "next_cursor"}``. The owner of each list supplies its cap, its pages and its items."""

from collections.abc import Callable

from rest_framework.response import Response

from governance.api.query_params import parse_limit

TRUNCATED_HEADER = "X-Mandate-Truncated"


def list_response(
    request,
    queryset,
    *,
    capped: Callable,  # queryset -> (rows, truncated)
    page: Callable,  # (queryset, limit, cursor) -> a page with .items and .next_cursor
    render: Callable,  # rows -> JSON items
    default_page_size: int,
) -> Response:
    params = request.query_params
    if "limit" in params or "cursor" in params:
        found = page(queryset, parse_limit(params.get("limit"), default_page_size), params.get("cursor", ""))
        return Response({"items": render(found.items), "next_cursor": found.next_cursor})
    rows, truncated = capped(queryset)
    response = Response(render(rows))
    if truncated:
        response[TRUNCATED_HEADER] = "true"
    return response
