"""The versioned mirror: one Clerk resource's documents in the app's collection, written
only through atomic operations, and the tombstones that keep deletions final.

Ordering is decided by the database, never read-then-write: an upsert's filter only
matches a stored version that is not newer than the incoming one, so a stale write falls
through to an insert that the unique index on the key rejects. The common path, an update
to an existing record, is one ``update``; a first insert adds one tombstone read, and a
refused write one read.
A resource declares what differs (``records.MirrorSpec``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from pymongo import DeleteOne, ReturnDocument
from pymongo.database import Database
from pymongo.errors import DuplicateKeyError

from ..bookkeeping import CREATED_AT, LAST_DELIVERY, UPDATED_AT, VERSION
from ..events import Outcome
from ..store.erasure import Eraser, Erasure
from ..store.errors import ContestedWrite, foreign_index_refusal, unavailable_on_error
from ..store.indexes import IndexGate
from ..values import fresh_default
from .records import Arbiter, MirrorSpec, Record, UpsertResult

_ATTEMPTS = 4
# Reconcile's page-sized operations get a longer bound than a single delivery's write. Each
# bound covers one operation: never a generator's yield, where it would cover the caller.
BULK_TIMEOUT_S = 120.0
# A filter that narrows a record by its key and tests a version beside it names the index it
# is for: the plan is then the same on every server, whatever its planner makes of an
# ``$and`` (SecantusDB's explains one as a collection scan). Only required indexes are
# named (the key's, and _id), so a hint can never name an index that is not there.
BY_ID = [("_id", 1)]
FOREVER = 2**63 - 1  # the version an undated tombstone holds back: every one


class VersionedMirror:
    def __init__(
        self,
        db: Database[Any],
        spec: MirrorSpec,
        *,
        indexes: IndexGate,
        erasure: Erasure,
        arbiter: Arbiter | None = None,
        clock: Callable[[], datetime] | None = None,
        bulk_timeout_s: float = BULK_TIMEOUT_S,
    ) -> None:
        self.db = db
        self.spec = spec
        self.fields = spec.fields
        self.key = spec.key
        self.documents = db[spec.collection]
        self.tombstones = db[spec.tombstones]
        self.indexes = indexes
        self.arbiter = arbiter
        self.bulk_timeout_s = bulk_timeout_s
        self._by_key = [(spec.key, 1)]
        self._eraser = Eraser(db, erasure)
        self._now = clock or (lambda: datetime.now(UTC))
        # What every write's update document has, worked out once from the map.
        self._insert_defaults = dict(spec.fields.app_owned)
        defaults = self._insert_defaults.items()
        self._fresh_defaults = tuple(name for name, value in defaults if isinstance(value, (list, dict)))
        self._stamps_updated = UPDATED_AT in spec.fields.service_timestamps
        self._stamps_created = CREATED_AT in spec.fields.service_timestamps

    def get(self, key: str) -> dict[str, Any] | None:
        with unavailable_on_error():
            return self.documents.find_one({self.key: key})

    def upsert_if_newer(self, record: Record, delivery_id: str | None = None) -> UpsertResult:
        """Write ``record`` unless the stored version is newer, a tombstone holds it back,
        or this same delivery was already applied."""
        self.indexes.ensure()
        with unavailable_on_error():
            for _ in range(_ATTEMPTS):
                try:
                    written = self.documents.update_one(
                        self._newer_filter(record, delivery_id),
                        self._update(record, delivery_id),
                        upsert=True,
                        hint=self._by_key,
                    )
                except DuplicateKeyError as exc:
                    pattern = (exc.details or {}).get("keyPattern") or {}
                    if self.arbiter is not None and self.arbiter.claims(pattern):
                        retry = self.arbiter.settle(pattern, record)
                        if retry is not None:
                            record = retry
                            continue
                    elif not self._identity_clash(pattern):
                        raise foreign_index_refusal(exc, self.spec.collection) from None
                    outcome = self._why_not_applied(record, delivery_id)
                    if outcome is None:
                        continue
                    return UpsertResult(outcome)
                created = written.upserted_id is not None
                if created and (dead := self._held_back([record])):
                    # A deletion landed before the insert did: undo it.
                    self._remove_dead(dead, [written.upserted_id], erase=True)
                    return UpsertResult(Outcome.STALE)
                return UpsertResult(Outcome.APPLIED, created=created)
        raise ContestedWrite(f"write for {record.key} still contested after retries")

    def delete(self, key: str, delivery_id: str | None = None, *, at: int | None = None) -> Outcome:
        """Remove the record, remember the deletion, and erase what points at it.

        The tombstone is written first, and inserts check for it after they land:
        whichever order the two race in, the record stays deleted. The document goes
        last, after the references, the cascade rules and the event log's payloads: a
        deletion interrupted by a crash still finds the document when it is retried
        (Svix's redelivery, the next reconcile or sync) and finishes; one that finds a
        tombstone and no document had finished. A dated deletion (``at``, in ms) removes
        only a version no newer than its date.
        """
        self.indexes.ensure()
        if self.spec.dated_deletions:
            return self._delete_dated(key, delivery_id, at if at is not None else self._now_ms())
        with unavailable_on_error():
            doc = self.documents.find_one({self.key: key}, {"_id": 1})
            object_ids = [] if doc is None else [doc["_id"]]
            before = self.tombstones.find_one_and_update(
                {"_id": key},
                self._tombstone(object_ids, delivery_id),
                upsert=True,
                return_document=ReturnDocument.BEFORE,
            )
            if doc is None and before is not None:
                return Outcome.DUPLICATE
            self._eraser.erase([key], object_ids)
        return Outcome.DELETED

    def _delete_dated(self, key: str, delivery_id: str | None, at: int) -> Outcome:
        with unavailable_on_error():
            before = self.tombstones.find_one_and_update(
                {"_id": key},
                self._dated_tombstone(at, delivery_id),
                upsert=True,
                return_document=ReturnDocument.BEFORE,
            )
            removed = self.documents.delete_one({self.key: key, VERSION: {"$lte": at}}, hint=self._by_key)
            if removed.deleted_count:
                return Outcome.DELETED
            if self.documents.find_one({self.key: key}, {"_id": 1}, hint=self._by_key) is not None:
                return Outcome.STALE  # a version newer than the deletion: a rejoin
        return (
            Outcome.DUPLICATE if before is not None and before.get("version", -1) >= at else Outcome.DELETED
        )

    def _tombstone(self, object_ids: list[Any], delivery_id: str | None) -> dict[str, Any]:
        """The tombstone's upsert: its first deletion's time and delivery, and every
        ``_id`` the record's documents had (the app's references hold those)."""
        update: dict[str, Any] = {"$setOnInsert": {"deletedAt": self._now(), "deliveryId": delivery_id}}
        if object_ids:
            update["$addToSet"] = {"objectIds": {"$each": object_ids}}
        return update

    def _dated_tombstone(self, at: int, delivery_id: str | None) -> dict[str, Any]:
        """A dated deletion's tombstone upsert: it holds back every version up to the latest
        deletion's date (``at``, ms), and keeps its first deletion's time and delivery."""
        return {
            "$max": {"version": at},
            "$setOnInsert": {"deletedAt": self._now(), "deliveryId": delivery_id},
        }

    def _remove_dead(self, dead: dict[str, int], object_ids: list[Any], *, erase: bool = False) -> None:
        """Remove documents a deletion holds back (``dead``: key -> the newest version it holds
        back). With ``erase`` they are erased as ``delete`` erases a record (references,
        cascade rules, the document last), for a document that may have stood a while; a
        batch's were only just inserted, so nothing points at them yet. A dated deletion's
        are removed by version, not by the one inserted: an update may have moved such a
        document on meanwhile, and it is as dead, while a newer version (a rejoin) stays."""
        if self.spec.dated_deletions:
            self.documents.bulk_write(
                [
                    DeleteOne({"_id": oid, VERSION: {"$lte": until}}, hint=BY_ID)
                    for until, oid in zip(dead.values(), object_ids, strict=True)
                ]
            )
        elif erase:
            self._eraser.erase(list(dead), object_ids)
        else:
            self.documents.delete_many({self.key: {"$in": list(dead)}})

    def _held_back(self, records: list[Record]) -> dict[str, int]:
        """The keys of ``records`` a deletion holds back, each with the newest version it
        holds back: every one for an undated tombstone or a deleted parent, up to its date
        for a dated one (a newer version, a rejoin, stays)."""
        keys = [r.key for r in records]
        found = self.tombstones.find({"_id": {"$in": keys}}, {"_id": 1, "version": 1})
        until = {t["_id"]: self._held_until(t) for t in found}
        held = {r.key: until[r.key] for r in records if r.key in until and r.version <= until[r.key]}
        for parent in self.spec.parents:
            ids = list({v for r in records if isinstance(v := r.values.get(parent.field), str)})
            if ids:
                gone = {t["_id"] for t in self.db[parent.tombstones].find({"_id": {"$in": ids}}, {"_id": 1})}
                held.update((r.key, FOREVER) for r in records if r.values.get(parent.field) in gone)
        return held

    def is_deleted(self, key: str) -> bool:
        with unavailable_on_error():
            return self.tombstones.find_one({"_id": key}, {"_id": 1}) is not None

    # -- internals -------------------------------------------------------------

    def _now_ms(self) -> int:
        return int(self._now().timestamp() * 1000)

    def _identity_clash(self, pattern: Mapping[str, Any]) -> bool:
        """Whether the index that refused an insert is the key's, or the app's own unique
        identity: either way another document is this record."""
        return self.key in pattern or bool(self.spec.natural) and set(self.spec.natural) <= set(pattern)

    def _newer_filter(self, record: Record, delivery_id: str | None) -> dict[str, Any]:
        """Matches the stored record if ``record`` may replace it."""
        query: dict[str, Any] = {self.key: record.key, VERSION: {"$lte": record.version}}
        if delivery_id is not None:
            query[LAST_DELIVERY] = {"$ne": delivery_id}
        return query

    def _update(self, record: Record, delivery_id: str | None) -> dict[str, Any]:
        """The map's Clerk fields set (those Clerk has no value for removed), the app-owned
        defaults on insert, and insert-only fields on insert alone, then left to the app."""
        now = self._now()
        fields: dict[str, Any] = {self.key: record.key, **record.values}
        fields[VERSION] = record.version
        fields[LAST_DELIVERY] = delivery_id
        on_insert = dict(self._insert_defaults)
        for name in self._fresh_defaults:  # a list or table of its own for each document
            on_insert[name] = fresh_default(on_insert[name])
        if self._stamps_updated:
            fields[UPDATED_AT] = now
        if self._stamps_created:
            on_insert[CREATED_AT] = now
        insert_only = self.fields.insert_only
        if insert_only:
            for name in insert_only & fields.keys():
                on_insert[name] = fields.pop(name)
        update = {"$set": fields, "$setOnInsert": on_insert}
        if record.absent and (unset := [name for name in record.absent if name not in insert_only]):
            update["$unset"] = dict.fromkeys(unset, "")
        return update

    def _document(self, record: Record, delivery_id: str | None = None) -> dict[str, Any]:
        """The whole document an upsert of a new ``record`` inserts, insert-only fields included."""
        update = self._update(record, delivery_id)
        return {**update["$set"], **update["$setOnInsert"]}

    def _why_not_applied(self, record: Record, delivery_id: str | None) -> Outcome | None:
        """Classify an upsert the filter refused; None means it is worth trying again.

        A deleted record's document is removed here. It exists only if an insert landed
        and its worker died before the tombstone check: Svix redelivers that unanswered
        delivery, the filter refuses it (same delivery, or older than a later write), and
        the check is made here, in the same read that classifies the refusal. It is erased
        as ``delete`` erases a record (references, cascade rules, the document last).
        """
        doc = self._stored_version(record.key)
        if doc is None:
            if self.spec.natural:
                self._adopt_natural(record)
            return None
        dead = self._dead_until(doc)
        if dead is not None and doc.get(VERSION, -1) <= dead:
            self._remove_dead({record.key: dead}, [doc["_id"]], erase=True)
            return Outcome.STALE if record.version <= dead else None
        if VERSION not in doc:
            # A document written before this service (e.g. by the old login hook):
            # adopt it as the oldest version so Clerk's data can take over.
            self.documents.update_one(
                {"_id": doc["_id"], VERSION: {"$exists": False}}, {"$set": {VERSION: -1}}, hint=BY_ID
            )
            return None
        if delivery_id is not None and doc.get(LAST_DELIVERY) == delivery_id:
            return Outcome.DUPLICATE
        if doc[VERSION] <= record.version:
            # Not newer: when the write was tried there was no document, and another
            # writer's insert of the same record won the unique index. Try again.
            return None
        return Outcome.STALE

    def _dead_until(self, doc: dict[str, Any]) -> int | None:
        """The newest version the stored record's tombstones hold back, if any (from
        ``_stored_version``'s lookups)."""
        if any(doc[f"parent{i}"] for i in range(len(self.spec.parents))):
            return FOREVER
        return max((self._held_until(t) for t in doc["tombstone"]), default=None)

    def _held_until(self, tombstone: Mapping[str, Any]) -> int:
        """The newest version a tombstone holds back: up to its date if deletions are dated,
        else every one."""
        return tombstone.get("version", FOREVER) if self.spec.dated_deletions else FOREVER

    def _adopt_natural(self, record: Record) -> None:
        """A document the app wrote before this service, under its own identity but without
        the key: give it the key, as the oldest version, so Clerk's data can take over."""
        match = {name: record.values.get(name) for name in self.spec.natural}
        self.documents.update_one(
            {**match, self.key: {"$exists": False}}, {"$set": {self.key: record.key, VERSION: -1}}
        )

    def _stored_version(self, key: str) -> dict[str, Any] | None:
        """The stored version of a record, its tombstone and its parents' (lists, empty if
        none), in one read."""
        stages: list[dict[str, Any]] = [
            {"$match": {self.key: key}},
            {"$limit": 1},
            {
                "$lookup": {
                    "from": self.spec.tombstones,
                    "localField": self.key,
                    "foreignField": "_id",
                    "as": "tombstone",
                }
            },
        ]
        projection = {VERSION: 1, LAST_DELIVERY: 1, "tombstone._id": 1, "tombstone.version": 1}
        for i, parent in enumerate(self.spec.parents):
            stages.append(
                {
                    "$lookup": {
                        "from": parent.tombstones,
                        "localField": parent.field,
                        "foreignField": "_id",
                        "as": f"parent{i}",
                    }
                }
            )
            projection[f"parent{i}._id"] = 1
        stages.append({"$project": projection})
        return next(self.documents.aggregate(stages), None)
