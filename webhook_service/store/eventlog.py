"""The event log: one record per verified delivery, kept for replay and for answering
"did Clerk's event arrive, and what happened to it?".

Records are written in batches by a background thread, so logging a delivery costs
the request no database round trip: the user write is the only one on the common
path. The trade-off is stated plainly in docs/design.md: a record still in the buffer
when a worker is killed is lost, while the user write it describes is not. Records,
including the raw payload with its personal data, expire through a TTL index.
"""

from __future__ import annotations

import atexit
import logging
import threading
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from pymongo import DESCENDING, UpdateOne
from pymongo.database import Database
from pymongo.errors import BulkWriteError, PyMongoError

from ..events import Outcome, Subject
from .errors import StoreUnavailable
from .indexes import IndexGate
from .mongo import EVENTS

# A write that failed this way is requeued and tried again: the database is down or slow,
# or the indexes could not be made just now (the shared gate says so without a driver error).
WRITE_FAILURES = (PyMongoError, StoreUnavailable)
log = logging.getLogger("webhook_service.store.events")  # its name since before the module's
_DUPLICATE_KEY = 11000
# What erasing a record's personal data does: the payload goes, the record stays.
_ERASE_PAYLOAD = {"$unset": {"payload": ""}, "$set": {"erased": True}}
# The fields that name a user or an organization, each with its index (required, so a
# deletion's erase can name it in a hint; see mirror/versioned.py).
USER_FIELD = "userId"
ORG_FIELD = "orgId"
NAMED_BY = {
    USER_FIELD: [(USER_FIELD, 1), ("receivedAt", -1)],
    ORG_FIELD: [(ORG_FIELD, 1), ("receivedAt", -1)],
}


@dataclass(slots=True)
class EventRecord:
    delivery_id: str
    event_type: str | None
    subject: Subject | None
    outcome: Outcome
    payload: str | None = None
    error: str | None = None
    received_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    @property
    def user_id(self) -> str | None:
        return self.subject.user_id if self.subject is not None else None

    @property
    def org_id(self) -> str | None:
        return self.subject.org_id if self.subject is not None else None

    def named(self, field_name: str) -> str | None:
        """The id this record names in ``userId`` or ``orgId``."""
        return self.user_id if field_name == USER_FIELD else self.org_id


class EventLog:
    def __init__(
        self,
        db: Database[Any],
        *,
        retention_days: float = 7.0,
        flush_interval_s: float = 1.0,
        batch_size: int = 100,
        max_batch: int = 500,
        max_buffer: int = 50_000,
        indexes: IndexGate,
        redacted_types: frozenset[str],
        tombstones: Mapping[str, str],
    ) -> None:
        """Records are written when ``batch_size`` of them wait, and at the latest after
        ``flush_interval_s``: a busy service writes full batches (few commands per
        delivery), a quiet one still writes within the interval. ``redacted_types`` keep
        a payload with nothing personal in it (a deletion's), which erasure leaves alone;
        ``tombstones`` names, for ``userId`` and ``orgId``, the collection that remembers
        deleted users and organizations."""
        self.collection = db[EVENTS]
        self._indexes = indexes
        self._redacted_types = redacted_types
        self._tombstones = dict(tombstones)
        self._retention = timedelta(days=retention_days)
        self._interval = flush_interval_s
        self._max_batch = max_batch
        self._batch_size = min(batch_size, max_batch)
        self._buffer: deque[EventRecord] = deque(maxlen=max_buffer)
        self._wake = threading.Condition()
        # Held while a batch is taken and written, so flush() returns only once every
        # record buffered before it, including a batch the writer thread has in flight,
        # is stored (or back in the buffer after a failure).
        self._flush_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._closed = False

    # -- writing -----------------------------------------------------------------

    def record(self, record: EventRecord) -> None:
        """Queue a record; the background writer stores it within ``flush_interval_s``."""
        with self._wake:
            if len(self._buffer) == self._buffer.maxlen:
                log.warning("event log buffer full; dropping the oldest record")
            self._buffer.append(record)
            if self._thread is None:
                self._start_writer()
            if len(self._buffer) >= self._batch_size:
                self._wake.notify()

    def flush(self) -> None:
        """Write everything buffered now. Raises one of WRITE_FAILURES if the database is down."""
        with self._flush_lock:
            while self._write_one_batch():
                pass

    def _write_one_batch(self) -> bool:
        """Write up to ``max_batch`` buffered records; False if there were none."""
        with self._wake:
            batch = [self._buffer.popleft() for _ in range(min(self._max_batch, len(self._buffer)))]
        if not batch:
            return False
        try:
            self._write(batch)
        except BulkWriteError as exc:
            # Unordered: the rest landed. Typically two workers raced to insert the
            # same delivery's record; writing the losers again now finds it.
            failed = sorted({e["index"] for e in exc.details.get("writeErrors", [])})
            self._requeue([batch[i] for i in failed])
            raise
        except WRITE_FAILURES:
            self._requeue(batch)
            raise
        return True

    def _requeue(self, records: list[EventRecord]) -> None:
        with self._wake:
            self._buffer.extendleft(reversed(records))

    def close(self) -> None:
        with self._wake:
            self._closed = True
            self._wake.notify()
        try:
            self.flush()
        except WRITE_FAILURES:
            log.warning("event log: %d records not written at shutdown", len(self._buffer))

    def _start_writer(self) -> None:
        self._thread = threading.Thread(target=self._run, name="event-log-writer", daemon=True)
        self._thread.start()
        atexit.register(self.close)

    def _run(self) -> None:
        backoff = self._interval
        failing = False
        while True:
            with self._wake:
                if self._closed:
                    return
                # A full batch waiting is written at once, unless writes are failing.
                if failing or len(self._buffer) < self._batch_size:
                    self._wake.wait(backoff)
            try:
                # One batch per wake, not a drain: the few records that arrive while a
                # batch is in flight wait for the next one, instead of each costing a
                # write (and its tombstone check) of their own.
                with self._flush_lock:
                    self._write_one_batch()
                backoff, failing = self._interval, False
            except WRITE_FAILURES as exc:
                backoff, failing = min(backoff * 2, 5.0), True
                log.warning("event log write failed (%s); retrying in %.1fs", type(exc).__name__, backoff)

    def _write(self, batch: list[EventRecord]) -> None:
        # The TTL index must exist before the first payload (personal data) lands, even on
        # a database that has only ever seen events no resource handles.
        self._indexes.ensure()
        # Most records are a delivery's first: a plain insert is the cheapest write. A
        # redelivery's record exists already; the insert refuses it and the upsert merges it.
        # A write concern error alone means the writes ran on the primary: the records are
        # kept as written (the log is a record, not the delivery's effect) and not repeated,
        # which would count an attempt twice.
        existing: list[int] = []
        try:
            self.collection.insert_many([self._document(r) for r in batch], ordered=False)
        except BulkWriteError as exc:
            errors = exc.details.get("writeErrors", [])
            if any(e.get("code") != _DUPLICATE_KEY for e in errors):
                raise  # the failed ones are requeued; on the next try they find their records
            existing = sorted(e["index"] for e in errors)
        if existing:
            try:
                self.collection.bulk_write([self._operation(batch[i]) for i in existing], ordered=False)
            except BulkWriteError as exc:
                if exc.details.get("writeErrors"):
                    for error in exc.details["writeErrors"]:
                        error["index"] = existing[error["index"]]  # as positions in ``batch``
                    raise
            except PyMongoError as exc:
                # The inserts landed: only the upserts are to be retried.
                unwritten = [{"index": i, "code": None, "errmsg": str(exc)} for i in existing]
                raise BulkWriteError({"writeErrors": unwritten}) from exc
        self._erase_deleted_users(batch)

    def _erase_deleted_users(self, batch: list[EventRecord]) -> None:
        """Strip the payloads just written that name a user or an organization already
        deleted. Checked after the write, as inserts check for tombstones: either this read
        sees the tombstone, or the deletion comes later and erases these records itself.
        Only this batch's records are touched, by ``_id``: the deletion erased earlier ones."""
        kept = [r for r in batch if r.payload is not None and r.subject is not None]
        erased: set[str] = set()
        for field_name, tombstones in self._tombstones.items():
            named = [(r.delivery_id, r.named(field_name)) for r in kept]
            ids = list({i for _, i in named if i})
            if not ids:
                continue
            found = self.collection.database[tombstones].find({"_id": {"$in": ids}}, {"_id": 1})
            deleted = {t["_id"] for t in found}
            erased.update(delivery_id for delivery_id, i in named if i in deleted)
        if erased:
            self.collection.update_many(
                {"_id": {"$in": list(erased)}, "type": {"$nin": list(self._redacted_types)}},
                _ERASE_PAYLOAD,
                hint=[("_id", 1)],
            )

    def _latest(self, record: EventRecord) -> dict[str, Any]:
        """The fields every attempt sets."""
        subject = record.subject
        latest: dict[str, Any] = {
            "type": record.event_type,
            "subject": subject.kind if subject is not None else None,
            "subjectId": subject.id if subject is not None else None,
            USER_FIELD: record.user_id,
            ORG_FIELD: record.org_id,
            "lastOutcome": record.outcome.value,
            "lastReceivedAt": record.received_at,
            "error": record.error,
            "expiresAt": record.received_at + self._retention,
        }
        if record.payload is not None:
            latest["payload"] = record.payload
        return latest

    def _document(self, record: EventRecord) -> dict[str, Any]:
        """A delivery's first record: what ``_operation`` makes when there is none yet."""
        return {
            "_id": record.delivery_id,
            **self._latest(record),
            "receivedAt": record.received_at,
            "attempts": 1,
            "outcome": record.outcome.value,
        }

    def _operation(self, record: EventRecord) -> UpdateOne:
        """One upsert per record, as an update pipeline so that ``outcome`` keeps what
        the deciding attempt did: only a record with no outcome yet, or a failed one,
        takes the new outcome. A later redelivery shows up in ``lastOutcome``."""
        stage = {name: {"$literal": value} for name, value in self._latest(record).items()}
        undecided = {"$in": [{"$ifNull": ["$outcome", Outcome.FAILED.value]}, [Outcome.FAILED.value]]}
        stage.update(
            receivedAt={"$ifNull": ["$receivedAt", {"$literal": record.received_at}]},
            attempts={"$add": [{"$ifNull": ["$attempts", 0]}, 1]},
            outcome={"$cond": [undecided, {"$literal": record.outcome.value}, "$outcome"]},
        )
        return UpdateOne({"_id": record.delivery_id}, [{"$set": stage}], upsert=True)

    # -- reading -----------------------------------------------------------------

    def get(self, delivery_id: str) -> dict[str, Any] | None:
        return self.collection.find_one({"_id": delivery_id})

    def find(
        self,
        *,
        outcome: str | None = None,
        user_id: str | None = None,
        org_id: str | None = None,
        event_type: str | None = None,
        since: datetime | None = None,
        limit: int = 50,
        with_payload: bool = False,
    ) -> list[dict[str, Any]]:
        """Recent records, newest first, filtered as the operator asked."""
        query: dict[str, Any] = {}
        if outcome:
            query["outcome"] = outcome
        if user_id:
            query[USER_FIELD] = user_id
        if org_id:
            query[ORG_FIELD] = org_id
        if event_type:
            query["type"] = event_type
        if since:
            query["receivedAt"] = {"$gte": since}
        projection = None if with_payload else {"payload": 0}
        cursor = self.collection.find(query, projection).sort("receivedAt", DESCENDING)
        return list(cursor.limit(limit) if limit else cursor)


def erase_payloads(
    db: Database[Any], field_name: str, ids: list[str], redacted_types: frozenset[str]
) -> None:
    """Remove the personal data of deleted users (``userId``) or organizations (``orgId``)
    from the records that name them: the payload (names, email addresses, IP) goes; the
    record that the delivery happened stays. A deletion's own record keeps its payload,
    redacted to the ids it names."""
    db[EVENTS].update_many(
        {field_name: {"$in": ids}, "type": {"$nin": list(redacted_types)}, "payload": {"$exists": True}},
        _ERASE_PAYLOAD,
        hint=NAMED_BY[field_name],
    )
