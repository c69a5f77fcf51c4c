"""What a deletion erases after its tombstone: the user in other users' reference
fields, the app's ``DELETE_CASCADE`` rules, the event log's payloads, then the document.

Each step is one command, idempotent, and backed by an index (``init-db`` plans the
cascade's), so a deletion costs the same at a thousand users as at a million.
"""

from __future__ import annotations

from typing import Any

from bson import ObjectId
from pymongo.database import Database

from ..domain import CascadeRule
from ..fieldmap import FieldMap
from .events import erase_payloads
from .mongo import USERS


class Eraser:
    def __init__(self, db: Database[Any], fields: FieldMap, cascade: tuple[CascadeRule, ...]) -> None:
        self.db = db
        self.fields = fields
        self.cascade = cascade

    def erase(self, clerk_id: str, object_ids: list[ObjectId]) -> None:
        """Everything a deletion does after its tombstone, the user's document last: a
        deletion interrupted midway still finds the document when it is retried."""
        self._pull_references(object_ids)
        references: list[ObjectId | str] = [*object_ids, clerk_id]
        for rule in self.cascade:
            self._apply_cascade_rule(rule, references)
        erase_payloads(self.db, [clerk_id])
        self.db[USERS].delete_many({self.fields.identity: clerk_id})

    def _apply_cascade_rule(self, rule: CascadeRule, references: list[ObjectId | str]) -> None:
        """One rule as one bulk command over the documents whose ``rule.field`` holds any
        of ``references`` (the user's ``_id``s and Clerk id)."""
        target, match = self.db[rule.collection], {rule.field: {"$in": references}}
        if rule.action == "delete":
            target.delete_many(match)
        elif rule.action == "pull":
            target.update_many(match, {"$pull": {rule.field: {"$in": references}}})
        else:
            target.update_many(match, {"$set": {rule.field: None}})

    def _pull_references(self, object_ids: list[ObjectId]) -> None:
        """The map's ``references`` (xClone's follow lists): one command per field, each on
        its own index. An ``$or`` over them is a collection scan on some planners
        (SecantusDB's), and its cost grows with the users."""
        if not object_ids:
            return
        ids = {"$in": object_ids}
        for field in self.fields.references:
            self.db[USERS].update_many({field: ids}, {"$pull": {field: ids}})
