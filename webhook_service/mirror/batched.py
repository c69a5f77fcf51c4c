"""The versioned mirror's page-sized operations, for reconcile and the watcher: a page of
records written in one bulk command, a batch deleted in the commands one deletion takes,
and the walk over what Clerk did not list. Every guarantee of the single path holds: the
same filter orders each write, tombstones are checked after inserts land, and deletions
keep the single path's order, batch-wide.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pymongo
from pymongo import UpdateOne
from pymongo.errors import BulkWriteError

from ..bookkeeping import RECONCILE_RUN, VERSION
from ..events import Outcome
from ..store.errors import key_clashes, unavailable_on_error
from .records import Record
from .versioned import VersionedMirror

UNSEEN_PAGE = 1000


class BatchedMirror(VersionedMirror):
    def delete_many(self, keys: list[str]) -> None:
        """``delete`` for a batch of records (reconcile's deletion phase) in the same few
        commands whatever its size, where one at a time costs six or more per record. The
        order is the single path's, batch-wide: every tombstone first, the documents last,
        so an interrupted batch is finished by the next run (or by a delivery)."""
        if not keys:
            return
        self.indexes.ensure()
        with unavailable_on_error():
            if self.spec.dated_deletions:
                self._delete_many_dated(keys, self._now_ms())
                return
            with pymongo.timeout(self.bulk_timeout_s):
                docs = list(self.documents.find({self.key: {"$in": keys}}, {self.key: 1}))
            stored: dict[str, list[Any]] = {}
            for doc in docs:
                stored.setdefault(doc[self.key], []).append(doc["_id"])
            ops = [
                UpdateOne({"_id": key}, self._tombstone(stored.get(key, []), None), upsert=True)
                for key in keys
            ]
            # A deletion racing this for one key cannot refuse it: the server retries an upsert
            # whose duplicate key is its own ``_id`` filter (MongoDB 4.2, SERVER-37124).
            with pymongo.timeout(self.bulk_timeout_s):
                self.tombstones.bulk_write(ops, ordered=False)
            object_ids = [oid for ids in stored.values() for oid in ids]
            self._eraser.erase(keys, object_ids, bound_s=self.bulk_timeout_s)

    def _delete_many_dated(self, keys: list[str], at: int) -> None:
        tombstone = self._dated_tombstone(at, None)
        ops = [UpdateOne({"_id": key}, tombstone, upsert=True) for key in keys]
        with pymongo.timeout(self.bulk_timeout_s):
            self.tombstones.bulk_write(ops, ordered=False)
        with pymongo.timeout(self.bulk_timeout_s):
            self.documents.delete_many({self.key: {"$in": keys}, VERSION: {"$lte": at}}, hint=self._by_key)

    def upsert_many_if_newer(self, records: list[Record]) -> list[Outcome]:
        """``upsert_if_newer`` for a page of records in one bulk write, outcome per record.

        The same filter guards every operation, so a webhook landing mid-page keeps
        whichever version is newer. Key clashes, rare, fall back to the single path.
        """
        if not records:
            return []
        self.indexes.ensure()
        ops = [
            UpdateOne(self._newer_filter(r, None), self._update(r, None), upsert=True, hint=self._by_key)
            for r in records
        ]
        outcomes = [Outcome.APPLIED] * len(records)
        created: dict[int, Any] = {}
        clashes: list[int] = []
        with unavailable_on_error():
            try:
                with pymongo.timeout(self.bulk_timeout_s):
                    created = dict(self.documents.bulk_write(ops, ordered=False).upserted_ids or {})
            except BulkWriteError as exc:
                created = {u["index"]: u["_id"] for u in exc.details.get("upserted", [])}
                clashes = key_clashes(exc, "bulk write")
        # A key clash is usually a newer local version (stale), but may be a document
        # written before this service, which the single path adopts.
        for index in clashes:
            outcomes[index] = self.upsert_if_newer(records[index]).outcome
        for i in self._remove_held_back({i: records[i] for i in created}, created):
            outcomes[i] = Outcome.STALE
        return outcomes

    def insert_new(self, records: list[Record], stamp: dict[str, Any]) -> list[tuple[Outcome, bool]]:
        """Insert records not stored locally (reconcile's backfill) in one command, the
        cheapest write there is, each with the ``stamp`` fields added. A record that
        appeared meanwhile (a webhook landed) or whose unique values are taken goes through
        ``upsert_if_newer`` instead. Returns, per record, the outcome and whether this call
        inserted (and so stamped) it.

        As after every insert, tombstones are checked once the documents have landed, and
        a record deleted meanwhile is removed again (stale). If reconcile is interrupted
        between the two, it is rerun, and the rerun deletes what Clerk no longer has.
        """
        if not records:
            return []
        self.indexes.ensure()
        documents = [{**self._document(record), **stamp} for record in records]
        results = [(Outcome.APPLIED, True)] * len(records)
        clashes: list[int] = []
        with unavailable_on_error():
            try:
                with pymongo.timeout(self.bulk_timeout_s):
                    self.documents.insert_many(documents, ordered=False)
            except BulkWriteError as exc:
                clashes = key_clashes(exc, "bulk insert")
        for index in clashes:
            results[index] = (self.upsert_if_newer(records[index]).outcome, False)
        inserted = {i: records[i] for i, (_, fresh) in enumerate(results) if fresh}
        for i in self._remove_held_back(inserted, {i: documents[i]["_id"] for i in inserted}):
            results[i] = (Outcome.STALE, True)
        return results

    def _remove_held_back(self, inserted: dict[int, Record], object_ids: dict[int, Any]) -> list[int]:
        """Remove the just-inserted records a deletion holds back; return their positions."""
        if not inserted:
            return []
        held = self.held_back(list(inserted.values()))
        gone = [i for i, record in inserted.items() if record.key in held]
        if gone:
            with unavailable_on_error(), pymongo.timeout(self.bulk_timeout_s):
                self._remove_dead(
                    {inserted[i].key: held[inserted[i].key] for i in gone}, [object_ids[i] for i in gone]
                )
        return gone

    def versions(self, keys: list[str]) -> dict[str, int]:
        """The stored Clerk version of each key that exists locally (-1 for legacy docs)."""
        with unavailable_on_error(), pymongo.timeout(self.bulk_timeout_s):
            docs = self.documents.find({self.key: {"$in": keys}}, {self.key: 1, VERSION: 1})
            return {d[self.key]: d.get(VERSION, -1) for d in docs}

    def held_back(self, records: list[Record]) -> dict[str, int]:
        """The keys of ``records`` a deletion holds back: a tombstone of their own (dated
        ones only up to their date), or of a record they belong to."""
        with unavailable_on_error(), pymongo.timeout(self.bulk_timeout_s):
            return self._held_back(records)

    def count_stored(self) -> int:
        """The local records that hold a Clerk key (the app may keep other documents too),
        counted on the key's index."""
        with unavailable_on_error(), pymongo.timeout(self.bulk_timeout_s):
            return self.documents.count_documents({self.key: {"$type": "string"}}, hint=self._by_key)

    def mark_seen(self, keys: list[str], run_id: str) -> None:
        """Stamp records that Clerk listed in this reconcile run (a single command per page)."""
        if not keys:
            return
        with unavailable_on_error(), pymongo.timeout(self.bulk_timeout_s):
            self.documents.update_many({self.key: {"$in": keys}}, {"$set": {RECONCILE_RUN: run_id}})

    def iter_unseen(
        self, run_id: str | None, older_than_ms: int, seen: set[str] | None = None
    ) -> Iterator[str]:
        """Local records Clerk did not list, skipping any written since the run began.

        One cursor in ``_id`` order, read a batch at a time: each batch is one bounded
        command, and its keys are yielded outside the bound, so what the caller does between
        batches (deleting those records) runs under its own deadlines, however long the walk
        takes. One cursor, not a query per page: a page's ``_id > last`` range is an index
        scan on MongoDB but a scan of the collection on SecantusDB, which made the walk
        quadratic in the number of records.
        """
        query: dict[str, Any] = {VERSION: {"$not": {"$gte": older_than_ms}}}
        if run_id is not None:
            query[RECONCILE_RUN] = {"$ne": run_id}
        with self.documents.find(query, {self.key: 1}, sort=[("_id", 1)], batch_size=UNSEEN_PAGE) as cursor:
            while True:
                with unavailable_on_error(), pymongo.timeout(self.bulk_timeout_s):
                    page = cursor.to_list(UNSEEN_PAGE)
                if not page:
                    return
                for doc in page:
                    key = doc.get(self.key)
                    if isinstance(key, str) and (seen is None or key not in seen):
                        yield key
