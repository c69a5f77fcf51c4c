"""A database as xClone leaves it, on the real test server, and the content of its other
collections that a deletion cascades to (``XCLONE_CASCADE``, ``seed_app_data``).

xClone's mongoose model (``user.model.js``) declares ``clerkId``, ``email`` and
``username`` with ``unique: true``; mongoose builds them at the app's start as
``clerkId_1``, ``email_1`` and ``username_1``, unique and not sparse. They are made here
without ``background``, which MongoDB ignores when it compares indexes (SecantusDB does
not). The old login hook wrote the documents below: no version, mongoose's ``__v`` and
timestamps, and usernames cut from the email.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from bson import ObjectId
from pymongo.database import Database

XCLONE_UNIQUE_INDEXES = ("clerkId_1", "email_1", "username_1")


def prepare_xclone(db: Database, legacy: list[dict[str, Any]] = ()) -> list[dict[str, Any]]:
    """Build xClone's three unique indexes and insert ``legacy`` documents; return them."""
    for name in XCLONE_UNIQUE_INDEXES:
        db.users.create_index([(name.removesuffix("_1"), 1)], unique=True, name=name)
    if legacy:
        db.users.insert_many(legacy)
    return list(legacy)


def legacy_doc(clerk_id: str, email: str, **fields: Any) -> dict[str, Any]:
    """A user as the old login hook wrote it."""
    stamp = datetime(2025, 3, 1, tzinfo=UTC)
    doc = {
        "_id": ObjectId(),
        "clerkId": clerk_id,
        "email": email,
        "firstName": "Legacy",
        "lastName": "User",
        "username": email.split("@")[0],
        "profilePicture": "",
        "bannerImage": "https://img.example/banner.png",
        "bio": "written in the app",
        "location": "Lisbon",
        "followers": [ObjectId()],
        "following": [],
        "createdAt": stamp,
        "updatedAt": stamp,
        "__v": 3,
    }
    doc.update(fields)
    return doc


# DELETE_CASCADE for xClone's other collections: its posts, comments, likes and notifications.
XCLONE_CASCADE = (
    "posts.user:delete,comments.user:delete,notifications.from:delete,notifications.to:delete,"
    "posts.likes:pull,comments.likes:pull"
)


def seed_app_data(db: Database, a: ObjectId, b: ObjectId, a_clerk_id: str, copies: int = 1) -> None:
    """xClone's other collections: A and B post, comment on each other, like, notify."""
    for _ in range(copies):
        db.posts.insert_many([
            {"user": a, "content": "by A", "likes": [b]},
            {"user": b, "content": "by B", "likes": [a, b]},
        ])
        db.comments.insert_many([
            {"user": a, "content": "A on B", "likes": [b, a]},
            {"user": b, "content": "B on A", "likes": [a]},
        ])
        db.notifications.insert_many([
            {"from": a, "to": b, "type": "like"},
            {"from": b, "to": a, "type": "follow"},
            {"from": b, "to": b, "type": "self"},
        ])
    db.bookmarks.insert_one({"owner": a_clerk_id, "post": "p1"})
    db.bookmarks.insert_one({"owner": "user_other", "post": "p2"})
