"""Clerk's users, as reconcile and sync read them from the Backend API."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from ...clerk_api import ClerkAPI, Page
from ...events import unstorable_reason
from ...fieldmap import FieldMap
from ...mirror.records import Record
from .mapping import map_clerk_user

EXISTING_IDS_CHUNK = 100  # ids one lookup confirms (``user_id`` filters of a list call)


class UserSource:
    """``/v1/users``: a bare JSON array, walked with the ``starting_after`` cursor in
    ``+created_at`` order, so users who sign up during a run come last and are picked up."""

    noun = "users"
    confirm_batch = EXISTING_IDS_CHUNK
    newest_by = "updated_at"  # the watcher's newest-first list: users can be ordered by their last change

    def __init__(self, clerk: ClerkAPI, fields: FieldMap) -> None:
        self.clerk = clerk
        self.fields = fields

    def get(self, user_id: str) -> dict[str, Any]:
        """The user as Clerk's JSON (the same keys a webhook's ``data`` has); ClerkNotFound."""
        return self.clerk.get(f"/users/{user_id}")

    def pages(self) -> Iterator[list[Any]]:
        return self.clerk.iter_pages("/users", {"order_by": "+created_at"}, cursor=True)

    def newest(self, offset: int, limit: int) -> Page:
        """The users changed most recently first (``order_by=-updated_at``), by offset: the
        cursor needs a ``created_at`` order."""
        return self.clerk.page("/users", {"order_by": "-updated_at", "limit": limit, "offset": offset})

    def total(self, newest: Page) -> int:
        """How many users Clerk has (``/v1/users/count``: the list does not say)."""
        return self.clerk.count("/users/count")

    def record(self, obj: Any) -> Record | str:
        """The user as the app's document holds it, or why it cannot be stored."""
        reason = unstorable_reason(obj)
        return reason if reason is not None else map_clerk_user(obj, self.fields)

    def existing(self, keys: list[str]) -> set[str]:
        """Which of these ids (at most ``confirm_batch``) Clerk still has: one list call."""
        page = self.clerk.page("/users", {"user_id": keys, "limit": len(keys)}).items
        return {u["id"] for u in page if isinstance(u, dict) and isinstance(u.get("id"), str)}
