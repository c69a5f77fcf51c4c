"""The ``users`` collection and its tombstones, written only through atomic operations.

Ordering is decided by the database, never read-then-write: an upsert's filter only
matches a stored version that is not newer than the incoming one, so a stale write
falls through to an insert that the unique index on the identity field rejects. The
common path, an update to an existing user, is one ``update``; a first insert adds one
tombstone read, and a refused write one read.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pymongo
from pymongo import ReturnDocument, UpdateOne
from pymongo.database import Database
from pymongo.errors import BulkWriteError, DuplicateKeyError, PyMongoError

from ..domain import (
    CascadeRule,
    LocalUser,
    Outcome,
    claim_beats_holder,
    disambiguated_username,
)
from ..fieldmap import FieldMap, builtin_field_map, fresh_default
from .erasure import Eraser
from .errors import (
    StoreUnavailable,
    UsernameConflict,
    foreign_index_refusal,
    key_clashes,
    unavailable_on_error,
)
from .indexes import ensure_indexes
from .mongo import TOMBSTONES, USERS

_USERNAME_ATTEMPTS = 4
# Reconcile's page-sized operations get a longer bound than a single delivery's write. Each
# bound covers one operation: never a generator's yield, where it would cover the caller.
BULK_TIMEOUT_S = 120.0
UNSEEN_PAGE = 1000
# A filter that narrows a user by its key and tests a version beside it names the index it
# is for: the plan is then the same on every server, whatever its planner makes of an
# ``$and`` (SecantusDB's explains one as a collection scan). Only required indexes are
# named (the identity field's, and _id), so a hint can never name an index that is not there.
BY_ID = [("_id", 1)]


@dataclass(frozen=True)
class UpsertResult:
    outcome: Outcome
    created: bool = False


@dataclass(frozen=True)
class SyncClaim:
    """This process may call Clerk for the user; ``previous`` is the stamp it replaced."""

    clerk_id: str
    stamp: datetime
    previous: datetime | None


class UserStore:
    """Local copies of Clerk users, versioned by Clerk's ``updated_at``, with the fields
    the field map names (xClone's built-in one by default). The map's ``identity`` field
    holds the Clerk id; everything else about the document's shape comes from the map."""

    def __init__(
        self,
        db: Database[Any],
        clock: Callable[[], datetime] | None = None,
        *,
        fields: FieldMap | None = None,
        insert_only_fields: tuple[str, ...] = (),
        cascade: tuple[CascadeRule, ...] = (),
        bulk_timeout_s: float = BULK_TIMEOUT_S,
    ) -> None:
        self.db = db
        self.bulk_timeout_s = bulk_timeout_s
        self.fields = (fields or builtin_field_map()).with_insert_only(insert_only_fields)
        self.key = self.fields.identity
        self._by_key = [(self.key, 1)]
        self._username_fields = ("usernameLower", self.fields.username) if self.fields.username else ()
        self.cascade = cascade
        self._eraser = Eraser(db, self.fields, cascade)
        self.users = db[USERS]
        self.tombstones = db[TOMBSTONES]
        self._now = clock or (lambda: datetime.now(UTC))
        self._indexes_ready = False
        self._index_lock = threading.Lock()
        self._index_failures = 0

    def ensure_indexes(self) -> None:
        """Create the indexes once per process, before the first write relies on them.

        Done lazily rather than at start, so a worker boots (and answers 503) while
        the database is down instead of crash-looping. A request that waited while
        another's attempt failed fails too, without an attempt of its own: with the
        database down, requests must not queue up behind each other's timeouts.
        """
        if self._indexes_ready:
            return
        failures_before = self._index_failures
        with self._index_lock, unavailable_on_error():
            if self._indexes_ready:
                return
            if self._index_failures != failures_before:
                raise StoreUnavailable("database error: index creation failed just now")
            try:
                ensure_indexes(self.db, fields=self.fields)
            except (PyMongoError, StoreUnavailable):
                self._index_failures += 1
                raise
            self._indexes_ready = True

    def get(self, clerk_id: str) -> dict[str, Any] | None:
        with unavailable_on_error():
            return self.users.find_one({self.key: clerk_id})

    def upsert_if_newer(self, user: LocalUser, delivery_id: str | None = None) -> UpsertResult:
        """Write ``user`` unless the stored version is newer, the id was deleted, or
        this same delivery was already applied."""
        self.ensure_indexes()
        username = user.username
        with unavailable_on_error():
            for _ in range(_USERNAME_ATTEMPTS):
                try:
                    written = self.users.update_one(
                        self._newer_filter(user, delivery_id),
                        self._update(user, username, delivery_id),
                        upsert=True,
                        hint=self._by_key,
                    )
                except DuplicateKeyError as exc:
                    key = (exc.details or {}).get("keyPattern") or {}
                    by = next((name for name in self._username_fields if name in key), None)
                    if by is not None and username is not None:
                        holder = self._username_holder(by, username)
                        if holder is None:
                            continue
                        if holder.get(self.key) != user.clerk_id:
                            username = self._settle_username_clash(user, username, holder)
                            continue
                        # Our own document holds the name: the filter refused the write.
                    elif self.key not in key:
                        raise foreign_index_refusal(exc) from None
                    outcome = self._why_not_applied(user, delivery_id)
                    if outcome is None:
                        continue
                    return UpsertResult(outcome)
                created = written.upserted_id is not None
                if created and self.is_deleted(user.clerk_id):
                    # The id was deleted before the insert landed: undo it.
                    self._eraser.erase([user.clerk_id], [written.upserted_id])
                    return UpsertResult(Outcome.STALE)
                return UpsertResult(Outcome.APPLIED, created=created)
        raise UsernameConflict(f"write for {user.clerk_id} still contested after retries")

    def delete(self, clerk_id: str, delivery_id: str | None = None) -> Outcome:
        """Remove the user, remember the id forever, and erase what points at it.

        The tombstone is written first, and inserts check for it after they land:
        whichever order the two race in, the user stays deleted. The document goes
        last, after the follow lists, the ``DELETE_CASCADE`` rules and the event log's
        payloads: a deletion interrupted by a crash still finds the document when it is
        retried (Svix's redelivery, the next reconcile or sync) and finishes; one that
        finds a tombstone and no document had finished.
        """
        self.ensure_indexes()
        with unavailable_on_error():
            doc = self.users.find_one({self.key: clerk_id}, {"_id": 1})
            object_ids = [] if doc is None else [doc["_id"]]
            before = self.tombstones.find_one_and_update(
                {"_id": clerk_id},
                self._tombstone(object_ids, delivery_id),
                upsert=True,
                return_document=ReturnDocument.BEFORE,
            )
            if doc is None and before is not None:
                return Outcome.DUPLICATE
            self._eraser.erase([clerk_id], object_ids)
        return Outcome.DELETED

    def delete_many(self, clerk_ids: list[str]) -> None:
        """``delete`` for a batch of users (reconcile's deletion phase) in the same few
        commands whatever its size, where one at a time costs six or more per user. The
        order is the single path's, batch-wide: every tombstone first, the documents last,
        so an interrupted batch is finished by the next run (or by ``user.deleted``)."""
        if not clerk_ids:
            return
        self.ensure_indexes()
        with unavailable_on_error():
            with pymongo.timeout(self.bulk_timeout_s):
                docs = list(self.users.find({self.key: {"$in": clerk_ids}}, {self.key: 1}))
            stored: dict[str, list[Any]] = {}
            for doc in docs:
                stored.setdefault(doc[self.key], []).append(doc["_id"])
            self._write_tombstones(clerk_ids, stored)
            object_ids = [oid for ids in stored.values() for oid in ids]
            self._eraser.erase(clerk_ids, object_ids, bound_s=self.bulk_timeout_s)

    def _tombstone(self, object_ids: list[Any], delivery_id: str | None) -> dict[str, Any]:
        """The tombstone's upsert: its first deletion's time and delivery, and every
        ``_id`` the user's documents had (the app's references hold those)."""
        update: dict[str, Any] = {"$setOnInsert": {"deletedAt": self._now(), "deliveryId": delivery_id}}
        if object_ids:
            update["$addToSet"] = {"objectIds": {"$each": object_ids}}
        return update

    def _write_tombstones(self, clerk_ids: list[str], stored: dict[str, list[Any]]) -> None:
        """A batch's tombstones in one bulk write, with the ``_id``s of ``stored``
        documents. A ``user.deleted`` racing it for one id cannot refuse it: the server
        retries an upsert whose duplicate key is its own ``_id`` filter (MongoDB 4.2,
        SERVER-37124), as it does for the single path's."""
        ops = [
            UpdateOne({"_id": clerk_id}, self._tombstone(stored.get(clerk_id, []), None), upsert=True)
            for clerk_id in clerk_ids
        ]
        with pymongo.timeout(self.bulk_timeout_s):
            self.tombstones.bulk_write(ops, ordered=False)

    def upsert_many_if_newer(self, users: list[LocalUser]) -> list[Outcome]:
        """``upsert_if_newer`` for a page of users in one bulk write, outcome per user.

        The same filter guards every operation, so a webhook landing mid-page keeps
        whichever version is newer. Key clashes, rare, fall back to the single path.
        """
        if not users:
            return []
        self.ensure_indexes()
        ops = [
            UpdateOne(
                self._newer_filter(u, None), self._update(u, u.username, None), upsert=True, hint=self._by_key
            )
            for u in users
        ]
        outcomes = [Outcome.APPLIED] * len(users)
        created: list[int] = []
        clashes: list[int] = []
        with unavailable_on_error():
            try:
                with pymongo.timeout(self.bulk_timeout_s):
                    created = list(self.users.bulk_write(ops, ordered=False).upserted_ids or {})
            except BulkWriteError as exc:
                created = [u["index"] for u in exc.details.get("upserted", [])]
                clashes = key_clashes(exc, "bulk write")
        # An identity clash is usually a newer local version (stale), but may be a document
        # written before this service, which the single path adopts.
        for index in clashes:
            outcomes[index] = self.upsert_if_newer(users[index]).outcome
        gone = self._remove_deleted([users[i].clerk_id for i in created])
        for i in created:
            outcomes[i] = Outcome.STALE if users[i].clerk_id in gone else Outcome.APPLIED
        return outcomes

    def insert_new(self, users: list[LocalUser], stamp: dict[str, Any]) -> list[tuple[Outcome, bool]]:
        """Insert users not stored locally (reconcile's backfill) in one command, the
        cheapest write there is, each with the ``stamp`` fields added. A user that
        appeared meanwhile (a webhook landed) or whose username is taken goes through
        ``upsert_if_newer`` instead. Returns, per user, the outcome and whether this call
        inserted (and so stamped) it.

        As after every insert, tombstones are checked once the documents have landed, and
        an id deleted meanwhile is removed again (stale). If reconcile is interrupted
        between the two, it is rerun, and the rerun deletes users Clerk no longer has.
        """
        if not users:
            return []
        self.ensure_indexes()
        documents = [{**self._document(user, None), **stamp} for user in users]
        results = [(Outcome.APPLIED, True)] * len(users)
        clashes: list[int] = []
        with unavailable_on_error():
            try:
                with pymongo.timeout(self.bulk_timeout_s):
                    self.users.insert_many(documents, ordered=False)
            except BulkWriteError as exc:
                clashes = key_clashes(exc, "bulk insert")
        for index in clashes:
            results[index] = (self.upsert_if_newer(users[index]).outcome, False)
        fresh_ids = [u.clerk_id for u, (_, fresh) in zip(users, results, strict=True) if fresh]
        gone = self._remove_deleted(fresh_ids)
        return [
            (Outcome.STALE, True) if fresh and user.clerk_id in gone else (outcome, fresh)
            for user, (outcome, fresh) in zip(users, results, strict=True)
        ]

    def _remove_deleted(self, inserted: list[str]) -> set[str]:
        """Remove the just-inserted users whose ids were deleted meanwhile; return those ids."""
        gone = self.deleted_among(inserted) if inserted else set()
        if gone:
            with unavailable_on_error(), pymongo.timeout(self.bulk_timeout_s):
                self.users.delete_many({self.key: {"$in": list(gone)}})
        return gone

    def versions(self, clerk_ids: list[str]) -> dict[str, int]:
        """The stored Clerk version of each id that exists locally (-1 for legacy docs)."""
        with unavailable_on_error(), pymongo.timeout(self.bulk_timeout_s):
            docs = self.users.find({self.key: {"$in": clerk_ids}}, {self.key: 1, "clerkUpdatedAt": 1})
            return {d[self.key]: d.get("clerkUpdatedAt", -1) for d in docs}

    def deleted_among(self, clerk_ids: list[str]) -> set[str]:
        with unavailable_on_error(), pymongo.timeout(self.bulk_timeout_s):
            return {t["_id"] for t in self.tombstones.find({"_id": {"$in": clerk_ids}}, {"_id": 1})}

    def mark_seen(self, clerk_ids: list[str], run_id: str) -> None:
        """Stamp users that Clerk listed in this reconcile run (a single command per page)."""
        if not clerk_ids:
            return
        with unavailable_on_error(), pymongo.timeout(self.bulk_timeout_s):
            self.users.update_many({self.key: {"$in": clerk_ids}}, {"$set": {"reconcileRun": run_id}})

    def iter_unseen(
        self, run_id: str | None, older_than_ms: int, seen: set[str] | None = None
    ) -> Iterator[str]:
        """Local users Clerk did not list, skipping any written since the run began.

        One cursor in ``_id`` order, read a batch at a time: each batch is one bounded
        command, and its ids are yielded outside the bound, so what the caller does between
        batches (deleting those users) runs under its own deadlines, however long the walk
        takes. One cursor, not a query per page: a page's ``_id > last`` range is an index
        scan on MongoDB but a scan of the collection on SecantusDB, which made the walk
        quadratic in the number of users.
        """
        query: dict[str, Any] = {"clerkUpdatedAt": {"$not": {"$gte": older_than_ms}}}
        if run_id is not None:
            query["reconcileRun"] = {"$ne": run_id}
        with self.users.find(query, {self.key: 1}, sort=[("_id", 1)], batch_size=UNSEEN_PAGE) as cursor:
            while True:
                with unavailable_on_error(), pymongo.timeout(self.bulk_timeout_s):
                    page = cursor.to_list(UNSEEN_PAGE)
                if not page:
                    return
                for doc in page:
                    clerk_id = doc.get(self.key)
                    if isinstance(clerk_id, str) and (seen is None or clerk_id not in seen):
                        yield clerk_id

    def claim_sync(self, clerk_id: str, now: datetime, interval_s: float) -> SyncClaim | None:
        """Start the user's sync interval, atomically across every worker and instance.

        One conditional update on ``clerkSyncedAt``: it matches only when no sync started
        within ``interval_s`` (a stamp from a clock far ahead counts as none). None means
        another sync holds the interval, or there is no document yet to stamp.
        """
        now = now.replace(microsecond=now.microsecond // 1000 * 1000)  # what BSON keeps
        recent = {"$gt": now - timedelta(seconds=interval_s), "$lte": now + timedelta(seconds=interval_s)}
        self.ensure_indexes()
        with unavailable_on_error():
            before = self.users.find_one_and_update(
                {self.key: clerk_id, "clerkSyncedAt": {"$not": recent}},
                {"$set": {"clerkSyncedAt": now}},
                projection={"clerkSyncedAt": 1, "_id": 0},
                return_document=ReturnDocument.BEFORE,
                hint=self._by_key,
            )
        if before is None:
            return None
        previous = before.get("clerkSyncedAt")
        return SyncClaim(clerk_id, now, previous if isinstance(previous, datetime) else None)

    def release_sync(self, claim: SyncClaim) -> None:
        """Undo a claim whose sync failed, so the next attempt may call Clerk at once."""
        if claim.previous is None:
            undo: dict[str, Any] = {"$unset": {"clerkSyncedAt": 1}}
        else:
            undo = {"$set": {"clerkSyncedAt": claim.previous}}
        with unavailable_on_error():
            self.users.update_one(
                {self.key: claim.clerk_id, "clerkSyncedAt": claim.stamp}, undo, hint=self._by_key
            )

    def is_deleted(self, clerk_id: str) -> bool:
        with unavailable_on_error():
            return self.tombstones.find_one({"_id": clerk_id}, {"_id": 1}) is not None

    # -- internals -------------------------------------------------------------

    def _newer_filter(self, user: LocalUser, delivery_id: str | None) -> dict[str, Any]:
        """Matches the stored user if ``user`` may replace it."""
        query: dict[str, Any] = {
            self.key: user.clerk_id,
            "clerkUpdatedAt": {"$lte": user.clerk_updated_at},
        }
        if delivery_id is not None:
            query["lastDeliveryId"] = {"$ne": delivery_id}
        return query

    def _update(self, user: LocalUser, username: str | None, delivery_id: str | None) -> dict[str, Any]:
        """The map's Clerk fields set (those Clerk has no value for removed), the app-owned
        defaults on insert, and insert-only fields on insert alone, then left to the app."""
        now = self._now()
        fields: dict[str, Any] = {self.key: user.clerk_id, **user.values}
        if username is not None and self.fields.username is not None and user.username_source is not None:
            fields[self.fields.username] = username
            fields.update(usernameLower=username.lower(), usernameSource=user.username_source.value)
        fields.update(clerkUpdatedAt=user.clerk_updated_at, lastDeliveryId=delivery_id, updatedAt=now)
        on_insert = {name: fresh_default(value) for name, value in self.fields.app_owned.items()}
        on_insert["createdAt"] = now
        insert_only = self.fields.insert_only
        for name in insert_only & fields.keys():
            on_insert[name] = fields.pop(name)
        update = {"$set": fields, "$setOnInsert": on_insert}
        if unset := [name for name in user.absent if name not in insert_only]:
            update["$unset"] = dict.fromkeys(unset, "")
        return update

    def _document(self, user: LocalUser, delivery_id: str | None) -> dict[str, Any]:
        """The whole document an upsert of a new ``user`` inserts, insert-only fields included."""
        update = self._update(user, user.username, delivery_id)
        return {**update["$set"], **update["$setOnInsert"]}

    def _why_not_applied(self, user: LocalUser, delivery_id: str | None) -> Outcome | None:
        """Classify an upsert the filter refused; None means it is worth trying again.

        A deleted id's document is removed here. It exists only if an insert landed and
        its worker died before the tombstone check: Svix redelivers that unanswered
        delivery, the filter refuses it (same delivery, or older than a later write), and
        the check is made here, in the same read that classifies the refusal. It is erased
        as ``delete`` erases a user (follow lists, ``DELETE_CASCADE``, the document last).
        """
        doc = self._stored_version(user.clerk_id)
        if doc is None:
            return None
        if doc["tombstone"]:
            self._eraser.erase([user.clerk_id], [doc["_id"]])
            return Outcome.STALE
        if "clerkUpdatedAt" not in doc:
            # A document written before this service (e.g. by the old login hook):
            # adopt it as the oldest version so Clerk's data can take over.
            self.users.update_one(
                {"_id": doc["_id"], "clerkUpdatedAt": {"$exists": False}},
                {"$set": {"clerkUpdatedAt": -1}},
                hint=BY_ID,
            )
            return None
        if delivery_id is not None and doc.get("lastDeliveryId") == delivery_id:
            return Outcome.DUPLICATE
        if doc["clerkUpdatedAt"] <= user.clerk_updated_at:
            # Not newer: when the write was tried there was no document, and another
            # writer's insert of the same user won the unique index. Try again.
            return None
        return Outcome.STALE

    def _stored_version(self, clerk_id: str) -> dict[str, Any] | None:
        """The stored version of a user and its tombstone (a list, empty if none), in one read."""
        docs = self.users.aggregate(
            [
                {"$match": {self.key: clerk_id}},
                {"$limit": 1},
                {
                    "$lookup": {
                        "from": TOMBSTONES,
                        "localField": self.key,
                        "foreignField": "_id",
                        "as": "tombstone",
                    }
                },
                {"$project": {"clerkUpdatedAt": 1, "lastDeliveryId": 1, "tombstone._id": 1}},
            ]
        )
        return next(docs, None)

    def _username_holder(self, by: str, username: str) -> dict[str, Any] | None:
        """Who holds ``username``, as the index that refused the write sees it: the
        service's ``usernameLower``, or an app's own unique index on the username field
        (which also catches documents written before this service, with no ``usernameLower``)."""
        value = username.lower() if by == "usernameLower" else username
        return self.users.find_one(
            {by: value}, {self.key: 1, self.fields.username: 1, "usernameSource": 1, "clerkUpdatedAt": 1}
        )

    def _settle_username_clash(self, user: LocalUser, username: str, holder: dict[str, Any]) -> str:
        """Resolve ``user``'s clash with another user on ``username``; return the name to try next."""
        field, holder_id = str(self.fields.username), str(holder.get(self.key))
        if not claim_beats_holder(
            user, holder.get("usernameSource"), holder.get("clerkUpdatedAt", -1), holder_id
        ):
            return disambiguated_username(username, user.clerk_id)
        # The holder's own spelling: the name its next event would settle on too.
        displaced = disambiguated_username(holder.get(field) or username, holder_id)
        try:
            self.users.update_one(
                {"_id": holder["_id"], field: holder.get(field)},
                {"$set": {field: displaced, "usernameLower": displaced.lower()}},
                hint=BY_ID,
            )
        except DuplicateKeyError as exc:
            raise UsernameConflict(f"cannot move {holder_id} off {username!r}") from exc
        return username
