"""The MongoDB client and its timeouts. The indexes are in ``store/indexes.py``."""

from __future__ import annotations

from typing import Any

import pymongo
from pymongo import MongoClient, WriteConcern
from pymongo.database import Database

from ..schema import EVENTS, TOMBSTONES, USERS

__all__ = ["EVENTS", "TOMBSTONES", "USERS", "connect", "ping"]


def connect(uri: str, *, timeout_ms: int = 5000, server_selection_ms: int = 2000) -> Database[Any]:
    """Open the database named by the URI's path.

    Every operation is bounded by ``timeout_ms`` (pymongo's client-side timeout) so a
    slow or absent server turns into a quick 503 well inside Svix's 15 s window. Writes
    wait for the journal on a majority unless the URI asks for something else: a 2xx
    must only follow a durable write.
    """
    client: MongoClient[Any] = MongoClient(
        uri,
        timeoutMS=timeout_ms,
        serverSelectionTimeoutMS=server_selection_ms,
        connectTimeoutMS=server_selection_ms,
        appname="clerk-webhook-service",
        connect=False,
        tz_aware=True,
    )
    write_concern = client.write_concern
    if not write_concern.document:
        write_concern = WriteConcern(w="majority", j=True)
    return client.get_database(write_concern=write_concern)


def ping(db: Database[Any], timeout_s: float = 2.0) -> bool:
    """True when the server answers a ping within ``timeout_s``."""
    try:
        with pymongo.timeout(timeout_s):
            db.command("ping")
    except pymongo.errors.PyMongoError:
        return False
    return True
