"""Test-only shims that make mongomock 4.3 behave like a server where the service relies on it.

1. mongomock issue #912: pymongo >= 4.11 passes ``sort=`` to the bulk builder's
   ``add_update`` / ``add_replace``; mongomock's ``BulkOperationBuilder`` does not know
   the keyword, so every ``bulk_write`` with ``UpdateOne``/``ReplaceOne`` raises
   ``TypeError: add_update() got an unexpected keyword argument 'sort'``. The event log
   writes through ``bulk_write``. ``patched_bulk_write()`` accepts ``sort=None`` (what
   pymongo sends when the operation has no sort) and refuses a real sort with
   NotImplementedError rather than silently ignoring it.

2. mongomock raises ``DuplicateKeyError`` with ``details=None``. A server (MongoDB,
   SecantusDB) names the violated index in ``details["keyPattern"]`` / ``["keyValue"]``,
   and ``UserStore`` uses that to tell a stale upsert (``clerkId``) from a username
   clash (``usernameLower``). ``server_like_duplicate_key_errors()`` runs mongomock's own
   uniqueness check unchanged and only adds those details: which index fired is still
   decided by mongomock, never by the shim.

3. mongomock refuses ``hint=`` on updates (NotImplementedError). The store names the
   index of a filter that narrows by a key and tests a version beside it; a hint picks an
   index and never changes which documents match, and mongomock has no indexes to pick
   from, so ``ignoring_hints()`` drops it.

``patched_mongomock()`` applies all three. All three are re-entrant, thread-safe context
managers that restore mongomock when the outermost block exits; close any EventLog
(its writer thread flushes in the background) before leaving the block.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

from mongomock import helpers
from mongomock.collection import BulkOperationBuilder, Collection
from pymongo.errors import DuplicateKeyError


class _Patch:
    """Replace some class attributes while at least one user is inside the block."""

    def __init__(self, cls: type, replacements: dict[str, Callable[[Callable[..., Any]], Any]]) -> None:
        self._cls = cls
        self._replacements = replacements
        self._lock = threading.Lock()
        self._depth = 0
        self._originals: dict[str, Any] = {}

    @contextmanager
    def __call__(self) -> Iterator[None]:
        with self._lock:
            if self._depth == 0:
                for name, make in self._replacements.items():
                    self._originals[name] = self._cls.__dict__[name]
                    setattr(self._cls, name, make(self._originals[name]))
            self._depth += 1
        try:
            yield
        finally:
            with self._lock:
                self._depth -= 1
                if self._depth == 0:
                    for name, original in self._originals.items():
                        setattr(self._cls, name, original)
                    self._originals.clear()


# -- 1. bulk_write and pymongo's ``sort`` keyword (mongomock #912) ------------------


def _accept_sort(method: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(method)
    def wrapper(self: BulkOperationBuilder, *args: Any, sort: Any = None, **kwargs: Any) -> Any:
        if sort is not None:
            raise NotImplementedError(f"mongomock cannot apply sort={sort!r} in bulk_write")
        return method(self, *args, **kwargs)

    return wrapper


patched_bulk_write = _Patch(BulkOperationBuilder, {"add_update": _accept_sort, "add_replace": _accept_sort})
patched_bulk_write.__doc__ = "Make mongomock's bulk_write accept pymongo's ``sort=None`` while inside."


# -- 2. DuplicateKeyError that names the index, as a server's does ------------------


def _ensure_uniques_with_details(original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    def ensure_uniques(self: Collection, new_data: dict[str, Any]) -> None:
        try:
            original(self, new_data)
        except DuplicateKeyError:
            pass
        else:
            return
        # mongomock found a violation; find which unique index it was, with mongomock's
        # own per-index test (the body of Collection._ensure_uniques), and say so.
        for name, index in self._store.indexes.items():
            if not index.get("unique"):
                continue
            values: dict[str, Any] = {}
            for key, _ in index["key"]:
                try:
                    values[key] = helpers.get_value_by_dot(new_data, key)
                except KeyError:
                    values[key] = None
            if index.get("sparse") and set(values.values()) == {None}:
                continue
            query: dict[str, Any] = dict(values)
            if index.get("partialFilterExpression") is not None:
                query = {"$and": [index["partialFilterExpression"], query]}
            if len(list(self._iter_documents(query))) > 1:
                message = (
                    f"E11000 duplicate key error collection: {self.full_name} index: {name} "
                    f"dup key: {values!r}"
                )
                details = {
                    "code": 11000,
                    "codeName": "DuplicateKey",
                    "errmsg": message,
                    "keyPattern": {key: direction for key, direction in index["key"]},
                    "keyValue": values,
                }
                raise DuplicateKeyError(message, 11000, details)
        raise DuplicateKeyError("E11000 Duplicate Key Error", 11000)

    return ensure_uniques


server_like_duplicate_key_errors = _Patch(Collection, {"_ensure_uniques": _ensure_uniques_with_details})
server_like_duplicate_key_errors.__doc__ = "Give mongomock's DuplicateKeyError keyPattern/keyValue details."


# -- 3. hints, which choose an index and never what matches --------------------------


def _drop_hint(original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    def update(self: Collection, *args: Any, hint: Any = None, **kwargs: Any) -> Any:
        return original(self, *args, **kwargs)

    return update


ignoring_hints = _Patch(Collection, {"_update": _drop_hint})
ignoring_hints.__doc__ = "Let mongomock's updates take (and ignore) an index hint."


@contextmanager
def patched_mongomock() -> Iterator[None]:
    """All three shims: bulk_write with ``sort=None``, server-like duplicate key errors
    and updates that take a hint."""
    with ExitStack() as stack:
        stack.enter_context(patched_bulk_write())
        stack.enter_context(server_like_duplicate_key_errors())
        stack.enter_context(ignoring_hints())
        yield
