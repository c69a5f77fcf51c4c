"""The local Clerk's users: ``GET /v1/users`` with its paging, ordering, cursor and
filters, ``/v1/users/count`` and ``/v1/users/{id}``, as Clerk's Backend API answers them."""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Self

from werkzeug.wrappers import Request, Response

from .clerk_http import invalid, json_response, limit_and_offset, order

SORTABLE_FIELDS = ("created_at", "updated_at", "last_sign_in_at", "last_active_at")


class UserDirectory:
    """Users by id, with the sort orders Clerk lists them in (cached until they change)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._users = _Users()
        self._sorted = _SortCache()

    @property
    def users(self) -> dict[str, dict[str, Any]]:
        """Live mapping user id -> user."""
        return self._users

    def replace(self, value: Iterable[dict[str, Any]] | Mapping[str, dict[str, Any]]) -> None:
        items = value.items() if isinstance(value, Mapping) else ((u["id"], u) for u in value)
        with self._lock:
            self._users = _Users(items)
            self._sorted = _SortCache()

    def invalidate(self) -> None:
        """Forget the sort order (after changing a user's sort fields in place)."""
        with self._lock:
            self._sorted = _SortCache()

    def list_page(self, req: Request) -> Response:
        paging = limit_and_offset(req)
        if isinstance(paging, Response):
            return paging
        ordering = order(req, "-created_at", SORTABLE_FIELDS)
        if isinstance(ordering, Response):
            return ordering
        (limit, offset), (sort_field, descending) = paging, ordering
        ids = self.filtered_ids(req, sort_field)
        cursor = req.args.get("starting_after")
        if cursor is not None:
            if offset:
                return invalid("starting_after", "starting_after cannot be combined with offset")
            if sort_field != "created_at":
                return invalid("order_by", "starting_after requires ordering by created_at")
            ordered = ids[::-1] if descending else ids
            try:
                start = ordered.index(cursor) + 1
            except ValueError:
                return invalid("starting_after", "starting_after must be the id of a listed user")
            page_ids = ordered[start : start + limit]
        elif descending:
            end = max(len(ids) - offset, 0)
            page_ids = ids[max(end - limit, 0) : end][::-1]
        else:
            page_ids = ids[offset : offset + limit]
        users = self._users
        return json_response(200, [u for u in (users.get(i) for i in page_ids) if u is not None])

    def count(self, req: Request) -> Response:
        total = len(self.filtered_ids(req, "created_at"))
        return json_response(200, {"object": "total_count", "total_count": total})

    def _sorted_ids(self, sort_field: str) -> list[str]:
        """Ids ascending by (field, id); cached until the users change."""
        with self._lock:
            users = self._users
            if self._sorted.version != users.version:
                self._sorted = _SortCache(version=users.version)
            ids = self._sorted.by_field.get(sort_field)
            if ids is None:
                snapshot = sorted(users.values(), key=lambda u: (u.get(sort_field) or 0, u["id"]))
                ids = self._sorted.by_field[sort_field] = [u["id"] for u in snapshot]
            return ids

    def filtered_ids(self, req: Request, sort_field: str) -> list[str]:
        """Sorted ids narrowed by the user_id, email_address, external_id and username filters."""
        ids = self._sorted_ids(sort_field)
        user_ids = set(req.args.getlist("user_id"))
        emails = {e.lower() for e in req.args.getlist("email_address")}
        external_ids = set(req.args.getlist("external_id"))
        usernames = set(req.args.getlist("username"))
        if not (user_ids or emails or external_ids or usernames):
            return ids
        users = self._users

        def keep(user: dict[str, Any] | None) -> bool:
            if user is None:
                return False
            if user_ids and user["id"] not in user_ids:
                return False
            if external_ids and user.get("external_id") not in external_ids:
                return False
            if usernames and user.get("username") not in usernames:
                return False
            addrs = {e["email_address"].lower() for e in user.get("email_addresses", ())}
            return not emails or bool(addrs & emails)

        return [i for i in ids if keep(users.get(i))]


class _Users(dict[str, dict[str, Any]]):
    """A dict whose ``version`` changes on every add, replace or remove (for the sort cache)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.version = 0

    def __setitem__(self, k: str, v: dict[str, Any]) -> None:
        super().__setitem__(k, v)
        self.version += 1

    def __delitem__(self, k: str) -> None:
        super().__delitem__(k)
        self.version += 1

    def pop(self, *args: Any) -> Any:
        self.version += 1
        return super().pop(*args)

    def popitem(self) -> tuple[str, dict[str, Any]]:
        self.version += 1
        return super().popitem()

    def clear(self) -> None:
        super().clear()
        self.version += 1

    def update(self, *args: Any, **kwargs: Any) -> None:
        super().update(*args, **kwargs)
        self.version += 1

    def setdefault(self, k: str, default: Any = None) -> Any:
        self.version += 1
        return super().setdefault(k, default)

    def __ior__(self, other: Any) -> Self:  # type: ignore[override,misc]
        self.update(other)
        return self


@dataclass
class _SortCache:
    version: int = -1
    by_field: dict[str, list[str]] = field(default_factory=dict)
