"""Clerk's memberships, as reconcile and sync read them from the Backend API."""

from __future__ import annotations

from collections.abc import Iterator
from itertools import groupby
from typing import Any

from ...clerk_api import ClerkAPI, ClerkNotFound, Page
from ...mirror.records import Record
from .mapping import (
    MembershipMap,
    map_membership,
    member_ids,
    membership_key,
    split_key,
    unstorable_membership,
)


class MembershipSource:
    """``/v1/organization_memberships``: every membership of the instance, each with its
    organization and ``public_user_data``, as ``{data, total_count}``, offset paging in
    ``+created_at`` order. An absence is confirmed against the organization's own list,
    filtered by user."""

    noun = "memberships"
    confirm_batch = 100
    newest_by = "created_at"  # the watcher sees joins, not role changes

    def __init__(self, clerk: ClerkAPI, memberships: MembershipMap) -> None:
        self.clerk = clerk
        self.memberships = memberships

    def pages(self) -> Iterator[list[Any]]:
        return self.clerk.iter_pages("/organization_memberships", {"order_by": "+created_at"})

    def of_user(self, user_id: str) -> list[Any]:
        """The user's memberships, every page of ``/v1/users/{id}/organization_memberships``."""
        return [
            m
            for page in self.clerk.iter_pages(f"/users/{user_id}/organization_memberships", {})
            for m in page
        ]

    def newest(self, offset: int, limit: int) -> Page:
        """The memberships created most recently first, with the list's ``total_count``."""
        params = {"order_by": "-created_at", "limit": limit, "offset": offset}
        return self.clerk.page("/organization_memberships", params)

    def total(self, newest: Page) -> int:
        return newest.total("/organization_memberships")

    def key_of(self, obj: Any) -> str | None:
        """The membership's key, from its organization's and user's ids, if it names both."""
        org_id, user_id = member_ids(obj) if isinstance(obj, dict) else (None, None)
        return membership_key(org_id, user_id) if org_id is not None and user_id is not None else None

    def record(self, obj: Any) -> Record | str:
        reason = unstorable_membership(obj)
        return reason if reason is not None else map_membership(obj, self.memberships)

    def existing(self, keys: list[str]) -> set[str]:
        """Which of these memberships Clerk still has: one list call per organization."""
        found: set[str] = set()
        pairs = sorted(split_key(key) for key in keys)
        for org_id, group in groupby(pairs, key=lambda pair: pair[0]):
            users = [user_id for _, user_id in group]
            try:
                page = self.clerk.page(
                    f"/organizations/{org_id}/memberships", {"user_id": users, "limit": 500}
                )
            except ClerkNotFound:
                continue  # the organization is gone, and its memberships with it
            found.update(key for membership in page.items if (key := self.key_of(membership)) is not None)
        return found
