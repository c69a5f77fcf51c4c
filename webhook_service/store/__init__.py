"""Persistence: the only code that talks to MongoDB. It owns indexes and atomic operations."""

from .errors import ForeignIndexRefused, StoreUnavailable, UsernameConflict
from .events import EventLog, EventRecord, erase_payloads
from .indexes import IndexUnavailable, ensure_indexes, migrate, warn_about_conflicts
from .mongo import connect, ping
from .users import SyncClaim, UpsertResult, UserStore

__all__ = [
    "EventLog",
    "ForeignIndexRefused",
    "EventRecord",
    "IndexUnavailable",
    "StoreUnavailable",
    "SyncClaim",
    "UpsertResult",
    "UserStore",
    "UsernameConflict",
    "connect",
    "ensure_indexes",
    "erase_payloads",
    "migrate",
    "warn_about_conflicts",
    "ping",
]
