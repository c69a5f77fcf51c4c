"""The per-user sync interval, claimed on the user's own document so that every worker
and instance sees it: ``clerkSyncedAt`` holds when the user's last sync started."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from pymongo import ReturnDocument

from ..bookkeeping import SYNCED_AT
from ..mirror.versioned import VersionedMirror
from ..store.errors import unavailable_on_error


@dataclass(frozen=True)
class SyncClaim:
    """This process may call Clerk for the user; ``previous`` is the stamp it replaced."""

    clerk_id: str
    stamp: datetime
    previous: datetime | None


class SyncClaims:
    def __init__(self, users: VersionedMirror) -> None:
        self.users = users
        self._by_key = [(users.key, 1)]

    def claim(self, clerk_id: str, now: datetime, interval_s: float) -> SyncClaim | None:
        """Start the user's sync interval, atomically across every worker and instance.

        One conditional update on ``clerkSyncedAt``: it matches only when no sync started
        within ``interval_s`` (a stamp from a clock far ahead counts as none). None means
        another sync holds the interval, or there is no document yet to stamp.
        """
        now = now.replace(microsecond=now.microsecond // 1000 * 1000)  # what BSON keeps
        recent = {"$gt": now - timedelta(seconds=interval_s), "$lte": now + timedelta(seconds=interval_s)}
        self.users.indexes.ensure()
        with unavailable_on_error():
            before = self.users.documents.find_one_and_update(
                {self.users.key: clerk_id, SYNCED_AT: {"$not": recent}},
                {"$set": {SYNCED_AT: now}},
                projection={SYNCED_AT: 1, "_id": 0},
                return_document=ReturnDocument.BEFORE,
                hint=self._by_key,
            )
        if before is None:
            return None
        previous = before.get(SYNCED_AT)
        return SyncClaim(clerk_id, now, previous if isinstance(previous, datetime) else None)

    def release(self, claim: SyncClaim) -> None:
        """Undo a claim whose sync failed, so the next attempt may call Clerk at once."""
        if claim.previous is None:
            undo: dict[str, Any] = {"$unset": {SYNCED_AT: 1}}
        else:
            undo = {"$set": {SYNCED_AT: claim.previous}}
        with unavailable_on_error():
            self.users.documents.update_one(
                {self.users.key: claim.clerk_id, SYNCED_AT: claim.stamp}, undo, hint=self._by_key
            )
