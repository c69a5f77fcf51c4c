"""What a deletion erases after its tombstone: the user in other users' reference
fields, the app's ``DELETE_CASCADE`` rules, the event log's payloads, then the document.

Each step is one command, idempotent, and backed by an index (``init-db`` plans the
cascade's), so a deletion costs the same at a thousand users as at a million.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from typing import Any

import pymongo
from bson import ObjectId
from pymongo.database import Database

from ..domain import CascadeRule
from ..fieldmap import FieldMap
from .events import erase_payloads
from .mongo import USERS


def _bounded(bound_s: float | None) -> AbstractContextManager[Any]:
    return nullcontext() if bound_s is None else pymongo.timeout(bound_s)


class Eraser:
    def __init__(self, db: Database[Any], fields: FieldMap, cascade: tuple[CascadeRule, ...]) -> None:
        self.db = db
        self.fields = fields
        self.cascade = cascade

    def erase(self, clerk_ids: list[str], object_ids: list[ObjectId], bound_s: float | None = None) -> None:
        """Everything a deletion does after its tombstones, the users' documents last: a
        deletion interrupted midway still finds the documents when it is retried.

        One user (a delivery) or a batch (reconcile) costs the same commands, each over all
        of them. ``bound_s``, when given, bounds each command alone: a batch's commands move
        more documents than one delivery's default bound allows for."""
        if object_ids:
            ids = {"$in": object_ids}
            for field in self.fields.references:
                with _bounded(bound_s):
                    self._pull_reference(field, ids)
        references: list[ObjectId | str] = [*object_ids, *clerk_ids]
        for rule in self.cascade:
            with _bounded(bound_s):
                self._apply_cascade_rule(rule, references)
        with _bounded(bound_s):
            erase_payloads(self.db, clerk_ids)
        with _bounded(bound_s):
            self.db[USERS].delete_many({self.fields.identity: {"$in": clerk_ids}})

    def _apply_cascade_rule(self, rule: CascadeRule, references: list[ObjectId | str]) -> None:
        """One rule as one bulk command over the documents whose ``rule.field`` holds any
        of ``references`` (the users' ``_id``s and Clerk ids)."""
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
        cost grows with the users."""
        self.db[USERS].update_many({field: ids}, {"$pull": {field: ids}})
