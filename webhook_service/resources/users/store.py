"""The app's ``users`` collection: the versioned mirror, plus the usernames it keeps
unique, plus what a user's deletion reaches (the follow lists, ``DELETE_CASCADE``)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from pymongo.collection import Collection
from pymongo.database import Database
from pymongo.errors import DuplicateKeyError

from ...bookkeeping import USERNAME_LOWER, USERNAME_SOURCE, VERSION
from ...cascade import CascadeRule
from ...fieldmap import FieldMap
from ...mirror.batched import BatchedMirror
from ...mirror.records import MirrorSpec, Record
from ...mirror.versioned import BULK_TIMEOUT_S, BY_ID
from ...schema import TOMBSTONES, USERS
from ...store.erasure import Erasure
from ...store.errors import ContestedWrite
from ...store.eventlog import USER_FIELD
from ...store.indexes import IndexGate
from .mapping import USERNAME, LocalUser
from .usernames import claim_beats_holder, disambiguated_username


class UserStore(BatchedMirror):
    """Local copies of Clerk users, versioned by Clerk's ``updated_at``, with the fields the
    field map names. The map's identity field holds the Clerk id; everything else about the
    document's shape comes from the map."""

    def __init__(
        self,
        db: Database[Any],
        fields: FieldMap,
        *,
        indexes: IndexGate,
        cascade: tuple[CascadeRule, ...] = (),
        redacted_types: frozenset[str] = frozenset(),
        clock: Callable[[], datetime] | None = None,
        bulk_timeout_s: float = BULK_TIMEOUT_S,
    ) -> None:
        [key] = fields.identity
        super().__init__(
            db,
            MirrorSpec("user", USERS, key, TOMBSTONES, fields),
            indexes=indexes,
            erasure=Erasure(USERS, key, fields.references, cascade, USER_FIELD, redacted_types),
            arbiter=UsernameArbiter(db[USERS], fields) if fields.target_of(USERNAME) else None,
            clock=clock,
            bulk_timeout_s=bulk_timeout_s,
        )
        self.cascade = cascade


class UsernameArbiter:
    """Keeps usernames unique without regard to case, whichever index reports a clash: the
    service's ``usernameLower`` or the app's own unique index on the username field (which
    also catches documents written before this service, with no ``usernameLower``)."""

    def __init__(self, users: Collection[Any], fields: FieldMap) -> None:
        self.users = users
        self.key = fields.identity[0]
        self.field = str(fields.target_of(USERNAME))
        self._indexed = (USERNAME_LOWER, self.field)

    def claims(self, key_pattern: Mapping[str, Any]) -> bool:
        return any(name in key_pattern for name in self._indexed)

    def settle(self, key_pattern: Mapping[str, Any], record: Record) -> Record | None:
        assert isinstance(record, LocalUser) and record.username is not None
        by = next(name for name in self._indexed if name in key_pattern)
        username = record.username
        holder = self._holder(by, username)
        if holder is None:
            return record  # the holder moved on meanwhile: try again
        if holder.get(self.key) == record.key:
            return None  # our own document holds the name: the filter refused the write
        if not claim_beats_holder(
            record, holder.get(USERNAME_SOURCE), holder.get(VERSION, -1), str(holder.get(self.key))
        ):
            return record.with_username(self.field, disambiguated_username(username, record.key))
        self._displace(holder, username)
        return record

    def _holder(self, by: str, username: str) -> dict[str, Any] | None:
        """Who holds ``username``, as the index that refused the write sees it."""
        value = username.lower() if by == USERNAME_LOWER else username
        projection = {self.key: 1, self.field: 1, USERNAME_SOURCE: 1, VERSION: 1}
        return self.users.find_one({by: value}, projection)

    def _displace(self, holder: dict[str, Any], username: str) -> None:
        """Move the holder to its disambiguated name: the name its next event settles on too."""
        holder_id = str(holder.get(self.key))
        displaced = disambiguated_username(holder.get(self.field) or username, holder_id)
        try:
            self.users.update_one(
                {"_id": holder["_id"], self.field: holder.get(self.field)},
                {"$set": {self.field: displaced, USERNAME_LOWER: displaced.lower()}},
                hint=BY_ID,
            )
        except DuplicateKeyError as exc:
            raise ContestedWrite(f"cannot move {holder_id} off {username!r}") from exc
