"""HTTP answers shaped as Clerk's Backend API gives them, for the local Clerk."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from werkzeug.wrappers import Request, Response

from .sample_events import clerk_error_body

MAX_LIMIT = 500


def json_response(status: int, payload: Any, headers: Mapping[str, str] | None = None) -> Response:
    body = json.dumps(payload, separators=(",", ":"))
    return Response(body, status=status, headers=dict(headers or {}), mimetype="application/json")


def invalid(param: str, long_message: str) -> Response:
    """Clerk's 422, naming the parameter it refused."""
    body = clerk_error_body("form_param_value_invalid", "is invalid", long_message, param_name=param)
    return json_response(422, body)


def not_found() -> Response:
    body = clerk_error_body("resource_not_found", "not found", "The requested resource was not found")
    return json_response(404, body)


def int_arg(req: Request, name: str, default: int) -> int | None:
    """An integer query parameter: ``default`` when absent, None when malformed."""
    raw = req.args.get(name)
    if raw is None:
        return default
    try:
        return int(raw)
    except ValueError:
        return None


def limit_and_offset(req: Request) -> tuple[int, int] | Response:
    """``limit`` (1-500, default 10) and ``offset`` (0 or more), or Clerk's 422."""
    limit = int_arg(req, "limit", 10)
    if limit is None or not 1 <= limit <= MAX_LIMIT:
        return invalid("limit", f"limit must be an integer between 1 and {MAX_LIMIT}")
    offset = int_arg(req, "offset", 0)
    if offset is None or offset < 0:
        return invalid("offset", "offset must be an integer greater than or equal to 0")
    return limit, offset


def order(req: Request, default: str, sortable: Sequence[str]) -> tuple[str, bool] | Response:
    """``order_by`` as (field, descending), or Clerk's 422. "+created_at" arrives as
    " created_at" when the client does not percent-encode "+"."""
    order_by = req.args.get("order_by", default).strip()
    field = order_by.lstrip("+-")
    if field not in sortable:
        return invalid("order_by", f"order_by must be one of {', '.join(sortable)}")
    return field, order_by.startswith("-")


def data_page(
    items: Sequence[Mapping[str, Any]], req: Request, *, default_order: str, sortable: Sequence[str]
) -> Response:
    """A ``{"data": [...], "total_count": N}`` page of ``items``, as the organization lists
    answer: ordered by ``order_by`` (ties by id), then ``offset`` and ``limit``."""
    paging = limit_and_offset(req)
    if isinstance(paging, Response):
        return paging
    ordering = order(req, default_order, sortable)
    if isinstance(ordering, Response):
        return ordering
    (limit, offset), (field, descending) = paging, ordering
    ranked = sorted(items, key=lambda item: (item.get(field) or 0, str(item.get("id"))), reverse=descending)
    return json_response(200, {"data": ranked[offset : offset + limit], "total_count": len(ranked)})
