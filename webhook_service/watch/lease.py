"""One active watcher per database, however many workers and instances run: a lease in the
``watch`` collection that lasts a few intervals. Its holder renews it every pass; when the
holder stops it releases it at once, and when it dies the lease lapses and another takes
over within a few intervals."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from pymongo.database import Database
from pymongo.errors import DuplicateKeyError

from ..schema import WATCH
from ..store.errors import unavailable_on_error

LEASE_ID = "lease"
BY_ID = [("_id", 1)]


class Lease:
    def __init__(
        self,
        db: Database[Any],
        ttl_s: float,
        *,
        holder: str | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.collection = db[WATCH]
        self.ttl = timedelta(seconds=ttl_s)
        self.holder = holder or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._now = clock

    def acquire(self) -> bool:
        """Renew the lease if this process holds it, else take it if it is free or lapsed.
        Two commands at most, each on ``_id``."""
        now = self._now()
        expires = {"$set": {"expiresAt": now + self.ttl}}
        with unavailable_on_error():
            renewed = self.collection.update_one(
                {"_id": LEASE_ID, "holder": self.holder}, expires, hint=BY_ID
            )
            if renewed.matched_count:
                return True
            taken = {"$set": {"holder": self.holder, "expiresAt": now + self.ttl, "since": now}}
            try:
                self.collection.update_one(
                    {"_id": LEASE_ID, "expiresAt": {"$lt": now}}, taken, upsert=True, hint=BY_ID
                )
            except DuplicateKeyError:
                return False  # another holds it and it has not lapsed
        return True

    def release(self) -> None:
        """Give the lease up now, so another instance takes over on its next tick."""
        with unavailable_on_error():
            self.collection.delete_one({"_id": LEASE_ID, "holder": self.holder})

    def current(self) -> dict[str, Any] | None:
        """Who holds the lease, and until when (None: nobody)."""
        with unavailable_on_error():
            return self.collection.find_one({"_id": LEASE_ID})
