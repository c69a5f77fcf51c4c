"""Pull one user fresh from Clerk into the local collection (``POST /api/users/sync``)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from .clerk_api import ClerkAPI, ClerkUnavailable, ClerkUserNotFound
from .domain import Outcome, map_clerk_user, unmappable_reason
from .store import UserStore

PUBLIC_FIELDS = (
    "clerkId",
    "email",
    "firstName",
    "lastName",
    "username",
    "profilePicture",
    "banned",
    "locked",
    "bannerImage",
    "bio",
    "location",
    "followers",
    "following",
    "createdAt",
    "updatedAt",
)


class SyncedUserGone(Exception):
    """Clerk no longer has the user, so the local copy was removed."""


@dataclass(frozen=True)
class SyncResult:
    created: bool
    user: dict[str, Any]


def sync_user(store: UserStore, clerk: ClerkAPI, clerk_id: str) -> SyncResult:
    """Fetch the user from Clerk and upsert it under the same ordering rule as webhooks.

    A webhook that is newer than Clerk's answer is kept; an older one arriving later
    cannot overwrite what sync wrote. Raises ClerkUnavailable or StoreUnavailable.
    """
    try:
        clerk_user = clerk.get_user(clerk_id)
    except ClerkUserNotFound:
        store.delete(clerk_id)
        raise SyncedUserGone(clerk_id) from None
    reason = unmappable_reason(clerk_user)
    if reason is not None:
        raise ClerkUnavailable(f"Clerk API sent a user that cannot be stored: {reason}", 502)
    result = store.upsert_if_newer(map_clerk_user(clerk_user))
    doc = store.get(clerk_id)
    if doc is None or result.outcome is Outcome.STALE and store.is_deleted(clerk_id):
        raise SyncedUserGone(clerk_id)
    return SyncResult(created=result.created, user=public_user(doc))


def public_user(doc: dict[str, Any]) -> dict[str, Any]:
    """The document as the app sees it: its own fields, ids as strings, times as ISO 8601."""
    view: dict[str, Any] = {"_id": str(doc["_id"])}
    for name in PUBLIC_FIELDS:
        value = doc.get(name)
        if isinstance(value, datetime):
            value = value.isoformat()
        elif name in ("followers", "following"):
            value = [str(v) for v in value or []]
        view[name] = value
    return view
