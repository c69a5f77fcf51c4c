"""Stores built as the service builds them (``catalog``), for tests that drive a store
directly rather than through the app: xClone's map unless a test gives another."""

from __future__ import annotations

from typing import Any

from pymongo.database import Database

from webhook_service.cascade import CascadeRule
from webhook_service.catalog import Declarations, build_event_log, build_stores, service_schema
from webhook_service.events import Outcome, Subject
from webhook_service.fieldmap import FieldMap
from webhook_service.resources.users.mapping import LocalUser, load_user_fields, map_clerk_user
from webhook_service.resources.users.store import UserStore
from webhook_service.store.eventlog import EventLog, EventRecord
from webhook_service.store.indexes import IndexGate, ensure_indexes

XCLONE_FIELDS = load_user_fields()


def user_store(
    db: Database[Any], fields: FieldMap = XCLONE_FIELDS, cascade: tuple[CascadeRule, ...] = (), **options: Any
) -> UserStore:
    """A UserStore over ``db`` with its own index gate, as ``build_stores`` makes it."""
    return build_stores(db, Declarations(fields, cascade), **options).users


def event_log(db: Database[Any], fields: FieldMap = XCLONE_FIELDS, **options: Any) -> EventLog:
    """An EventLog over ``db``, as the service makes it."""
    return build_event_log(db, IndexGate(db, service_schema(Declarations(fields))), **options)


def xclone_user(data: dict[str, Any], fields: FieldMap = XCLONE_FIELDS) -> LocalUser:
    """A Clerk User through xClone's map (or ``fields``)."""
    return map_clerk_user(data, fields)


def user_subject(user_id: str) -> Subject:
    """What a ``user.*`` event names."""
    return Subject("user", user_id, user_id=user_id)


def ensure_service_indexes(db: Database[Any], cascade: tuple[CascadeRule, ...] = ()) -> None:
    """The indexes the service makes with xClone's map (and ``init-db``'s for ``cascade``)."""
    ensure_indexes(db, service_schema(Declarations(XCLONE_FIELDS, cascade)))


def user_record(delivery_id: str, event_type: str, user_id: str, outcome: Outcome, **kw: Any) -> EventRecord:
    """An event-log record of a ``user.*`` delivery."""
    return EventRecord(delivery_id, event_type, user_subject(user_id), outcome, **kw)
