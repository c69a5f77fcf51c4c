"""Clerk's organizations, as reconcile reads them from the Backend API."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from ...clerk_api import ClerkAPI, ClerkNotFound, Page
from ...events import unstorable_reason
from ...mirror.records import Record
from .mapping import OrganizationMap, map_organization


class OrganizationSource:
    """``/v1/organizations``: ``{data, total_count}``, offset paging (there is no cursor),
    in ``+created_at`` order: the default, newest first, would shift every page as
    organizations are created during a run. An absence is confirmed one id at a time."""

    noun = "organizations"
    confirm_batch = 20
    newest_by = "created_at"  # no updated_at order: the watcher sees creations, not changes

    def __init__(self, clerk: ClerkAPI, organizations: OrganizationMap) -> None:
        self.clerk = clerk
        self.organizations = organizations

    def params(self) -> dict[str, Any]:
        params: dict[str, Any] = {"order_by": "+created_at"}
        if self.organizations.fields.target_of("$members_count") is not None:
            params["include_members_count"] = "true"
        return params

    def pages(self) -> Iterator[list[Any]]:
        return self.clerk.iter_pages("/organizations", self.params())

    def newest(self, offset: int, limit: int) -> Page:
        """The organizations created most recently first, with the list's ``total_count``."""
        return self.clerk.page(
            "/organizations", {**self.params(), "order_by": "-created_at", "limit": limit, "offset": offset}
        )

    def total(self, newest: Page) -> int:
        return newest.total("/organizations")

    def record(self, obj: Any) -> Record | str:
        reason = unstorable_reason(obj)
        return reason if reason is not None else map_organization(obj, self.organizations.fields)

    def existing(self, keys: list[str]) -> set[str]:
        found = set()
        for org_id in keys:
            try:
                self.clerk.get(f"/organizations/{org_id}")
            except ClerkNotFound:
                continue
            found.add(org_id)
        return found
