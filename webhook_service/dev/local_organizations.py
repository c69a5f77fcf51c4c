"""The local Clerk's organizations and memberships, as Clerk's Backend API answers them:
``{"data": [...], "total_count": N}`` with ``limit`` and ``offset`` (no cursor).

- ``GET /v1/organizations`` (``order_by`` ``name``, ``created_at`` or ``members_count``,
  default ``-created_at``; ``members_count`` only with ``include_members_count=true``)
  and ``/v1/organizations/{id or slug}``;
- ``GET /v1/organizations/{id}/memberships`` (``user_id`` filters);
- ``GET /v1/organization_memberships``, every membership of the instance;
- ``GET /v1/users/{id}/organization_memberships``.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from typing import Any

from werkzeug.wrappers import Request, Response

from .clerk_http import data_page, json_response, not_found

ORG_SORTABLE = ("name", "created_at", "members_count")
MEMBERSHIP_SORTABLE = ("created_at", "updated_at")


class OrganizationDirectory:
    """Organizations by id, and memberships by (organization id, user id)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.organizations: dict[str, dict[str, Any]] = {}
        self.memberships: dict[tuple[str, str], dict[str, Any]] = {}

    def add_organization(self, organization: dict[str, Any]) -> dict[str, Any]:
        """Add or replace one organization. Memberships already added keep the copy of it
        they embed: add them again to embed the new one."""
        with self._lock:
            self.organizations[organization["id"]] = organization
        return organization

    def remove_organization(self, org_id: str) -> dict[str, Any] | None:
        """Delete an organization and, as Clerk does, its memberships."""
        with self._lock:
            self._drop_memberships(lambda key: key[0] == org_id)
            return self.organizations.pop(org_id, None)

    def add_membership(self, membership: dict[str, Any]) -> dict[str, Any]:
        org_id, user_id = membership["organization"]["id"], membership["public_user_data"]["user_id"]
        with self._lock:
            self.memberships[(org_id, user_id)] = membership
        return membership

    def remove_user(self, user_id: str) -> None:
        """A deleted user's memberships go with it."""
        with self._lock:
            self._drop_memberships(lambda key: key[1] == user_id)

    def _drop_memberships(self, doomed: Callable[[tuple[str, str]], bool]) -> None:
        """Delete the memberships whose (organization id, user id) is ``doomed``; the caller
        holds the lock, so that a listing never sees an organization's deletion half done."""
        for key in [k for k in self.memberships if doomed(k)]:
            del self.memberships[key]

    def answer(self, req: Request, route: str) -> Response | None:
        """The answer to ``route`` if it is one of the organization paths, else None."""
        parts = route.strip("/").split("/")  # ["v1", ...]
        if parts[1:] == ["organizations"]:
            return self._list_organizations(req)
        if parts[1:] == ["organization_memberships"]:
            return self._memberships(req, lambda _m: True)
        if len(parts) == 3 and parts[1] == "organizations":
            organization = self._find(parts[2])
            return not_found() if organization is None else json_response(200, organization)
        if len(parts) == 4 and parts[1] == "organizations" and parts[3] == "memberships":
            org_id = parts[2]
            if org_id not in self.organizations:
                return not_found()
            users = set(req.args.getlist("user_id"))
            return self._memberships(req, lambda m: m[0] == org_id and (not users or m[1] in users))
        if len(parts) == 4 and parts[1] == "users" and parts[3] == "organization_memberships":
            user_id = parts[2]
            return self._memberships(req, lambda m: m[1] == user_id)
        return None

    def _find(self, id_or_slug: str) -> dict[str, Any] | None:
        with self._lock:
            by_slug = (o for o in self.organizations.values() if o.get("slug") == id_or_slug)
            return self.organizations.get(id_or_slug) or next(by_slug, None)

    def _list_organizations(self, req: Request) -> Response:
        counted = req.args.get("include_members_count") == "true"
        with self._lock:
            organizations = list(self.organizations.values())
            counts = Counter(org_id for org_id, _ in self.memberships) if counted else None
        if counts is not None:
            organizations = [dict(o, members_count=counts[o["id"]]) for o in organizations]
        else:
            organizations = [{k: v for k, v in o.items() if k != "members_count"} for o in organizations]
        return data_page(organizations, req, default_order="-created_at", sortable=ORG_SORTABLE)

    def _memberships(self, req: Request, wanted: Any) -> Response:
        with self._lock:
            found = [m for key, m in self.memberships.items() if wanted(key)]
        return data_page(found, req, default_order="-created_at", sortable=MEMBERSHIP_SORTABLE)
