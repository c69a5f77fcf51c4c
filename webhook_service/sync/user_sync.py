"""Pull one user fresh from Clerk into the local collection (``POST /api/users/sync``).

Clerk's rate limit is shared by the whole app, and a mobile client syncs often (retries,
several screens mounting at once), so a user is pulled from Clerk at most once per
``SYNC_MIN_INTERVAL_S``: the interval is claimed on the user's document, which every
worker and instance sees, and concurrent syncs of one user in a worker share one call.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar

from bson import ObjectId

from ..clerk_api import ClerkNotFound, ClerkUnavailable
from ..events import Outcome
from ..fieldmap import FieldMap
from ..resources.users.clerk import UserSource
from ..resources.users.store import UserStore
from ..store.errors import StoreUnavailable
from ..values import from_storable
from .claims import SyncClaims
from .memberships import MembershipRefresh

T = TypeVar("T")


class SyncedUserGone(Exception):
    """Clerk no longer has the user, so the local copy was removed."""


@dataclass(frozen=True)
class SyncResult:
    created: bool
    user: dict[str, Any]
    pulled: bool = True  # False: answered from the stored copy, inside the interval


class SingleFlight(Generic[T]):
    """Concurrent calls under one key run once; every caller gets that run's outcome."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running: dict[str, Future[T]] = {}

    def run(self, key: str, call: Callable[[], T]) -> T:
        with self._lock:
            running = self._running.get(key)
            if running is None:
                future: Future[T] = Future()
                self._running[key] = future
        if running is not None:
            return running.result()
        try:
            result = call()
        except BaseException as exc:
            future.set_exception(exc)
            raise
        finally:
            with self._lock:
                del self._running[key]
        future.set_result(result)
        return result


class UserSync:
    """Sync with the per-user interval and in-worker sharing; one per app (so per worker)."""

    def __init__(
        self,
        store: UserStore,
        clerk: UserSource,
        *,
        min_interval_s: float = 10.0,
        memberships: MembershipRefresh | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.store = store
        self.clerk = clerk
        self.memberships = memberships
        self.claims = SyncClaims(store)
        self.min_interval_s = min_interval_s
        self._clock = clock
        self._flights: SingleFlight[SyncResult] = SingleFlight()

    def sync(self, clerk_id: str) -> SyncResult:
        """The user's profile, pulled from Clerk unless a sync started within the interval.

        Raises SyncedUserGone, ClerkUnavailable or StoreUnavailable. A sync that failed
        gives its claim back, so it does not hold the interval.
        """
        return self._flights.run(clerk_id, lambda: self._sync_once(clerk_id))

    def _pull(self, clerk_id: str) -> SyncResult:
        """The user from Clerk, then (when the app keeps them) the user's memberships."""
        result = sync_user(self.store, self.clerk, clerk_id)
        if self.memberships is not None:
            self.memberships.refresh(clerk_id)
        return result

    def _sync_once(self, clerk_id: str) -> SyncResult:
        if self.min_interval_s <= 0:
            return self._pull(clerk_id)
        now = self._clock()
        claim = self.claims.claim(clerk_id, now, self.min_interval_s)
        if claim is None:
            doc = self.store.get(clerk_id)
            if doc is not None:
                return SyncResult(created=False, user=public_user(doc, self.store.fields), pulled=False)
        try:
            result = self._pull(clerk_id)
        except (ClerkUnavailable, StoreUnavailable):
            if claim is not None:
                # If this fails too, the claim lapses after the interval, as a crashed worker's does.
                with contextlib.suppress(StoreUnavailable):
                    self.claims.release(claim)
            raise
        if claim is None:  # the first sync created the document: start its interval now
            self.claims.claim(clerk_id, now, self.min_interval_s)
        return result


def sync_user(store: UserStore, clerk: UserSource, clerk_id: str) -> SyncResult:
    """Fetch the user from Clerk and upsert it under the same ordering rule as webhooks.

    A webhook that is newer than Clerk's answer is kept; an older one arriving later
    cannot overwrite what sync wrote. Raises ClerkUnavailable or StoreUnavailable.
    """
    try:
        clerk_user = clerk.get(clerk_id)
    except ClerkNotFound:
        store.delete(clerk_id)
        raise SyncedUserGone(clerk_id) from None
    record = clerk.record(clerk_user)
    if isinstance(record, str):
        raise ClerkUnavailable(f"Clerk API sent a user that cannot be stored: {record}", 502)
    result = store.upsert_if_newer(record)
    doc = store.get(clerk_id)
    if doc is None or result.outcome is Outcome.STALE and store.is_deleted(clerk_id):
        raise SyncedUserGone(clerk_id)
    return SyncResult(created=result.created, user=public_user(doc, store.fields))


def public_user(doc: dict[str, Any], fields: FieldMap) -> dict[str, Any]:
    """The document as the field map describes it (the identity, every mapped field, and
    when it was created and updated), as JSON: ids as strings, times as ISO 8601, and
    metadata as the JSON Clerk holds, whichever rule stored it (``values.storable``)."""
    view: dict[str, Any] = {"_id": str(doc["_id"])}
    json_text = fields.json_text_fields
    for name in fields.public_fields:
        if name in doc:
            value = doc[name]
            view[name] = _json_value(from_storable(value) if name in json_text else value)
    return view


def _json_value(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, ObjectId):
        return str(value)
    if isinstance(value, list):
        return [_json_value(v) for v in value]
    if isinstance(value, dict):
        return {k: _json_value(v) for k, v in value.items()}
    return value
