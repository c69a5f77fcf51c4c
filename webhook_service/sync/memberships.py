"""A sync also refreshes the user's memberships, when the app keeps them: a user who just
accepted an invitation finds the membership in the app's database at once, without
waiting for the webhook, and one who left is gone from it."""

from __future__ import annotations

import logging
import time

from ..mirror.records import Record
from ..resources.memberships.clerk import MembershipSource
from ..resources.memberships.store import MembershipStore

# Clerk's clock and this one may differ a little: a membership this sync does not see is
# removed only as of this long before the listing, so one Clerk created just then stays.
CLOCK_SKEW_MS = 2000
log = logging.getLogger(__name__)


class MembershipRefresh:
    def __init__(self, store: MembershipStore, source: MembershipSource) -> None:
        self.store = store
        self.source = source

    def refresh(self, user_id: str) -> None:
        """Bring the user's memberships to Clerk's list (``/v1/users/{id}/organization_memberships``)
        through the ordering rule of every write: a newer local version is kept, a deleted
        organization's memberships stay gone. Each write is a single delivery's, under the
        request's bound; a user has few memberships. Raises ClerkUnavailable or
        StoreUnavailable."""
        listed_at = int(time.time() * 1000) - CLOCK_SKEW_MS
        listed: set[str] = set()
        for obj in self.source.of_user(user_id):
            # Clerk lists it, so it is not gone, whether or not this copy can be stored.
            if (key := self.source.key_of(obj)) is not None:
                listed.add(key)
            record = self.source.record(obj)
            if isinstance(record, Record):
                self.store.upsert_if_newer(record)
            else:
                log.warning("sync of %s: a membership Clerk lists is not stored: %s", user_id, record)
        for key in sorted(set(self.store.keys_of_user(user_id)) - listed):
            self.store.delete(key, at=listed_at)
