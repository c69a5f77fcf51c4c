"""Persistence: the only code that talks to MongoDB. It owns indexes and atomic operations."""

from .errors import StoreUnavailable, UsernameConflict
from .events import EventLog, EventRecord
from .mongo import connect, ensure_indexes, ping
from .users import UpsertResult, UserStore

__all__ = [
    "EventLog",
    "EventRecord",
    "StoreUnavailable",
    "UpsertResult",
    "UserStore",
    "UsernameConflict",
    "connect",
    "ensure_indexes",
    "ping",
]
