"""What a deletion erases after its tombstone: the record in the reference fields of its
own collection, the cascade rules on the app's collections, the event log's payloads,
then the document.

Each step is one command, idempotent, and backed by an index (``init-db`` plans the
cascade's), so a deletion costs the same at a thousand records as at a million.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any

import pymongo
from bson import ObjectId
from pymongo.database import Database

from ..cascade import CascadeRule
from .eventlog import erase_payloads


def bounded(bound_s: float | None) -> AbstractContextManager[Any]:
    return nullcontext() if bound_s is None else pymongo.timeout(bound_s)


@dataclass(frozen=True)
class Erasure:
    """What deleting one resource's records reaches."""

    collection: str
    key: str  # the field that holds the record's key
    references: tuple[str, ...] = ()  # fields of the same collection that hold records' _ids
    cascade: tuple[CascadeRule, ...] = ()
    log_field: str | None = None  # the event log's field that names these records
    redacted_types: frozenset[str] = frozenset()  # records whose payload erasure leaves alone


class Eraser:
    def __init__(self, db: Database[Any], erasure: Erasure) -> None:
        self.db = db
        self.erasure = erasure

    def erase(self, keys: list[str], object_ids: list[ObjectId], bound_s: float | None = None) -> None:
        """Everything a deletion does after its tombstones, the documents last: a
        deletion interrupted midway still finds the documents when it is retried.

        One record (a delivery) or a batch (reconcile) costs the same commands, each over all
        of them. ``bound_s``, when given, bounds each command alone: a batch's commands move
        more documents than one delivery's default bound allows for."""
        erasure = self.erasure
        if object_ids:
            ids = {"$in": object_ids}
            for field in erasure.references:
                with bounded(bound_s):
                    self._pull_reference(field, ids)
        references: list[ObjectId | str] = [*object_ids, *keys]
        for rule in erasure.cascade:
            with bounded(bound_s):
                self._apply_cascade_rule(rule, references)
        if erasure.log_field is not None:
            with bounded(bound_s):
                erase_payloads(self.db, erasure.log_field, keys, erasure.redacted_types)
        with bounded(bound_s):
            self.db[erasure.collection].delete_many({erasure.key: {"$in": keys}})

    def _apply_cascade_rule(self, rule: CascadeRule, references: list[ObjectId | str]) -> None:
        """One rule as one bulk command over the documents whose ``rule.field`` holds any
        of ``references`` (the records' ``_id``s and Clerk ids)."""
        target, match = self.db[rule.collection], {rule.field: {"$in": references}}
        if rule.action == "delete":
            target.delete_many(match)
        elif rule.action == "pull":
            target.update_many(match, {"$pull": {rule.field: {"$in": references}}})
        else:
            target.update_many(match, {"$set": {rule.field: None}})

    def _pull_reference(self, field: str, ids: dict[str, list[ObjectId]]) -> None:
        """One of the map's ``references`` (xClone's follow lists), on its own index. An
        ``$or`` over them is a collection scan on some planners (SecantusDB's), and its
        cost grows with the records."""
        self.db[self.erasure.collection].update_many({field: ids}, {"$pull": {field: ids}})
