"""Realistic Clerk organizations and memberships: Backend API and webhook ``data`` shapes,
for the local Clerk, ``send-test-event``, the tests and the bench.

A membership embeds a partial copy of its organization (no ``private_metadata``, no
``created_by``, as in real deliveries) and the member's ``public_user_data``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from .sample_events import clerk_id, derived_timestamps, digest, sample_users

ROLE_PERMISSIONS = {
    "org:admin": [
        "org:sys_profile:manage",
        "org:sys_profile:delete",
        "org:sys_memberships:read",
        "org:sys_memberships:manage",
        "org:sys_domains:read",
        "org:sys_domains:manage",
    ],
    "org:member": ["org:sys_memberships:read"],
}
ROLE_NAMES = {"org:admin": "Admin", "org:member": "Member", "admin": "Admin", "basic_member": "Member"}
# The embedded organization of a membership lacks these (a real 2025 delivery shows it).
_NOT_EMBEDDED = ("private_metadata", "created_by", "members_count")


def make_organization(
    org_id: str | None = None,
    *,
    seed: object = None,
    name: str | None = None,
    slug: str | None = None,
    created_at: int | None = None,
    updated_at: int | None = None,
    created_by: str | None = None,
    public_metadata: Mapping[str, Any] | None = None,
    private_metadata: Mapping[str, Any] | None = None,
    members_count: int | None = None,
    **overrides: Any,
) -> dict[str, Any]:
    """A complete Clerk Organization object; deterministic from ``org_id`` or ``seed``.
    ``members_count`` appears only when given, as Clerk sends it only when asked."""
    key: object = org_id if org_id is not None else seed
    d = digest("organization", key)
    created_at, updated_at = derived_timestamps(d, created_at, updated_at)
    org_id = org_id or clerk_id("org", key, timestamp_ms=created_at)
    name = name or f"Team {d[2:4].hex()}"
    organization: dict[str, Any] = {
        "object": "organization",
        "id": org_id,
        "name": name,
        "slug": slug or re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-"),
        "image_url": f"https://img.clerk.com/org_{d[4:10].hex()}",
        "has_image": False,
        "max_allowed_memberships": 5,
        "admin_delete_enabled": True,
        "public_metadata": dict(public_metadata or {}),
        "private_metadata": dict(private_metadata or {}),
        "created_by": created_by,
        "created_at": created_at,
        "updated_at": updated_at,
    }
    if members_count is not None:
        organization["members_count"] = members_count
    organization.update(overrides)
    return organization


def make_deleted_organization(org_id: str) -> dict[str, Any]:
    """The ``data`` of an ``organization.deleted`` event (no timestamps)."""
    return {"deleted": True, "id": org_id, "object": "organization"}


def make_membership(
    organization: Mapping[str, Any],
    user: Mapping[str, Any],
    *,
    role: str = "org:member",
    created_at: int | None = None,
    updated_at: int | None = None,
    public_metadata: Mapping[str, Any] | None = None,
    **overrides: Any,
) -> dict[str, Any]:
    """A complete OrganizationMembership of ``user`` (a Clerk User) in ``organization``."""
    created_at = created_at if created_at is not None else max(organization["created_at"], user["created_at"])
    updated_at = updated_at if updated_at is not None else created_at
    primary = user.get("primary_email_address_id")
    identifier = next(
        (e["email_address"] for e in user.get("email_addresses", ()) if e.get("id") == primary),
        user.get("username") or "",
    )
    membership: dict[str, Any] = {
        "object": "organization_membership",
        "id": clerk_id("orgmem", f"{organization['id']}:{user['id']}:{created_at}", timestamp_ms=created_at),
        "role": role,
        "role_name": ROLE_NAMES.get(role, role.removeprefix("org:").title()),
        "permissions": list(ROLE_PERMISSIONS.get(role, [])),
        "public_metadata": dict(public_metadata or {}),
        "private_metadata": {},
        "organization": {k: v for k, v in organization.items() if k not in _NOT_EMBEDDED},
        "public_user_data": {
            "user_id": user["id"],
            "first_name": user.get("first_name"),
            "last_name": user.get("last_name"),
            "image_url": user.get("image_url"),
            "has_image": bool(user.get("has_image")),
            "identifier": identifier,
        },
        "created_at": created_at,
        "updated_at": updated_at,
    }
    membership.update(overrides)
    return membership


_SAMPLE_ORG_MS = 1_731_000_000_000  # 2024-11-07, after the sample users signed up


def sample_organizations() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The local Clerk's organization and its members: Ada made the Analytical Engine
    Society, Grace joined it, with a title in ``public_metadata`` for each."""
    ada, grace = sample_users()[:2]
    society = make_organization(
        seed="sample:society",
        name="Analytical Engine Society",
        slug="analytical-engine",
        created_at=_SAMPLE_ORG_MS,
        created_by=ada["id"],
        public_metadata={"plan": "pro"},
        private_metadata={"billing": "invoice"},
    )
    members = [
        make_membership(society, ada, role="org:admin", public_metadata={"title": "Founder"}),
        make_membership(
            society, grace, created_at=_SAMPLE_ORG_MS + 86_400_000, public_metadata={"title": "Engineer"}
        ),
    ]
    return [society], members
