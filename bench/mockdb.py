"""mongomock for the benchmark: the test shim, plus hash lookups instead of full scans.

Stock mongomock answers every query, and checks every unique index on every write, by
scanning all documents (about 3.6 µs per stored document per operation here), and
expires TTL-indexed documents by another full scan on every access. Behind a service
that keeps an event log, that makes an operation cost milliseconds after a few thousand
deliveries, and the figures would describe mongomock. So, while ``indexed_mongomock()``
is active:

* a query with an equality (or ``$in``) on ``_id``, ``clerkId``, ``usernameLower``, ``userId``,
  ``followers`` or ``following`` (top level, inside ``$and``, or in every branch of an
  ``$or``) looks its candidates up in a hash map, then still applies mongomock's own
  ``filter_applies`` to each. The maps may hold stale entries but miss none for the
  operations the service and the baseline use: they are updated on every insert and
  after every in-place update (array fields index each element);
* an ``aggregate`` that starts with ``$match`` (the store's classifying read) reads only
  the documents that ``$match`` finds, where stock mongomock copies the whole collection
  first; ``$lookup`` already runs a ``find`` per document;
* TTL expiry is off (nothing in a benchmark run is old enough to expire).

Everything else is mongomock as the tests use it (``tests.support.mongomock_compat``).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

from bson import ObjectId
from mongomock import aggregate
from mongomock.collection import Collection
from mongomock.filtering import filter_applies
from mongomock.store import CollectionStore

from tests.support.mongomock_compat import patched_mongomock

INDEXED = ("clerkId", "usernameLower", "followers", "following", "userId")
_KEYS = (str, ObjectId)
_lock = threading.Lock()
_active = False


def _maps(store: CollectionStore) -> dict[str, dict[Any, set[Any]]]:
    maps = store.__dict__.get("_bench_maps")
    if maps is None:
        maps = store.__dict__.setdefault("_bench_maps", {name: {} for name in INDEXED})
    return maps


def _note(store: CollectionStore, doc: dict[str, Any]) -> None:
    maps = _maps(store)
    for name in INDEXED:
        value = doc.get(name)
        for key in value if isinstance(value, list) else (value,):
            if isinstance(key, _KEYS):
                maps[name].setdefault(key, set()).add(doc["_id"])


def _values(condition: Any) -> list[Any] | None:
    """The values an equality or ``$in`` condition accepts, or None for anything else."""
    if isinstance(condition, _KEYS):
        return [condition]
    if isinstance(condition, dict) and set(condition) == {"$in"}:
        values = list(condition["$in"])
        return values if all(isinstance(v, _KEYS) for v in values) else None
    return None


def _candidates(store: CollectionStore, spec: Any) -> set[Any] | None:
    """The ``_id``s that can match ``spec``, or None when no lookup applies."""
    if not isinstance(spec, dict):
        return None
    values = _values(spec.get("_id"))
    if values is not None:
        return set(values)
    for name in INDEXED:
        values = _values(spec.get(name))
        if values is not None:
            found: set[Any] = set()
            for value in values:
                found.update(_maps(store)[name].get(value, ()))
            return found
    for part in spec.get("$and", ()):
        found_and = _candidates(store, part)
        if found_and is not None:
            return found_and
    if spec.get("$or"):
        branches = [_candidates(store, part) for part in spec["$or"]]
        if all(b is not None for b in branches):
            return set().union(*branches)
    return None


def _install() -> list[tuple[type, str, Any]]:
    originals = [
        (CollectionStore, "__setitem__", CollectionStore.__setitem__),
        (CollectionStore, "_remove_expired_documents", CollectionStore._remove_expired_documents),
        (Collection, "_iter_documents", Collection._iter_documents),
        (Collection, "_apply_update_document", Collection._apply_update_document),
        (Collection, "aggregate", Collection.aggregate),
    ]
    set_item, _, iter_documents, apply_update, run_aggregate = (o[2] for o in originals)

    def store_setitem(self: CollectionStore, key: Any, value: dict[str, Any]) -> None:
        set_item(self, key, value)
        _note(self, value)

    def iter_docs(self: Collection, spec: Any) -> Iterator[dict[str, Any]]:
        store = self._store
        ids = _candidates(store, spec)
        if ids is None:
            return iter_documents(self, spec)
        documents = store._documents
        found = [documents[i] for i in ids if i in documents]
        return iter([doc for doc in found if filter_applies(spec, doc)])

    def apply_update_doc(self: Collection, existing: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
        result = apply_update(self, existing, *args, **kwargs)
        if "_id" in existing:
            _note(self._store, existing)
        return result

    def aggregate_matched(self: Collection, pipeline: list[dict[str, Any]], *args: Any, **kwargs: Any) -> Any:
        if not pipeline or set(pipeline[0]) != {"$match"}:
            return run_aggregate(self, pipeline, *args, **kwargs)
        matched = list(self.find(pipeline[0]["$match"]))
        return aggregate.process_pipeline(matched, self.database, pipeline[1:], kwargs.get("session"))

    CollectionStore.__setitem__ = store_setitem
    CollectionStore._remove_expired_documents = lambda self: None
    Collection._iter_documents = iter_docs
    Collection._apply_update_document = apply_update_doc
    Collection.aggregate = aggregate_matched
    return originals


@contextmanager
def indexed_mongomock() -> Iterator[None]:
    """mongomock with the test shims and hash lookups; not re-entrant."""
    global _active
    with _lock:
        if _active:
            raise RuntimeError("indexed_mongomock() is already active")
        _active = True
    originals = _install()
    try:
        with ExitStack() as stack:
            stack.enter_context(patched_mongomock())
            yield
    finally:
        for cls, name, original in originals:
            setattr(cls, name, original)
        with _lock:
            _active = False
