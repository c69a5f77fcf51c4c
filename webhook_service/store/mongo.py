"""The MongoDB client, its timeouts, and every index the service relies on."""

from __future__ import annotations

import pymongo
from pymongo import ASCENDING, MongoClient, WriteConcern
from pymongo.database import Database

USERS = "users"
TOMBSTONES = "deleted_users"
EVENTS = "events"


def connect(uri: str, *, timeout_ms: int = 5000, server_selection_ms: int = 2000) -> Database:
    """Open the database named by the URI's path.

    Every operation is bounded by ``timeout_ms`` (pymongo's client-side timeout) so a
    slow or absent server turns into a quick 503 well inside Svix's 15 s window. Writes
    wait for the journal on a majority unless the URI asks for something else: a 2xx
    must only follow a durable write.
    """
    client: MongoClient = MongoClient(
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


def ensure_indexes(db: Database) -> None:
    """Create the indexes the atomic operations depend on. Idempotent."""
    users = db[USERS]
    users.create_index([("clerkId", ASCENDING)], unique=True, name="clerkId_unique")
    users.create_index(
        [("usernameLower", ASCENDING)],
        unique=True,
        name="usernameLower_unique",
        partialFilterExpression={"usernameLower": {"$type": "string"}},
    )
    users.create_index([("email", ASCENDING)], name="email")
    users.create_index([("followers", ASCENDING)], name="followers")
    users.create_index([("following", ASCENDING)], name="following")
    events = db[EVENTS]
    events.create_index([("expiresAt", ASCENDING)], expireAfterSeconds=0, name="expiresAt_ttl")
    events.create_index([("receivedAt", pymongo.DESCENDING)], name="receivedAt")
    events.create_index([("outcome", ASCENDING), ("receivedAt", pymongo.DESCENDING)], name="outcome")
    events.create_index([("userId", ASCENDING), ("receivedAt", pymongo.DESCENDING)], name="userId")


def ping(db: Database, timeout_s: float = 2.0) -> bool:
    """True when the server answers a ping within ``timeout_s``."""
    try:
        with pymongo.timeout(timeout_s):
            db.command("ping")
    except pymongo.errors.PyMongoError:
        return False
    return True
