"""What each ``user.*`` event means: which user it names, what it does to ``users``, and
what of it the event log keeps. Registered in ``dispatch.EVENT_TYPES``."""

from __future__ import annotations

import json

from ...events import Event, Outcome, Subject, required_id, required_version
from .mapping import map_clerk_user
from .store import UserStore


def changed_user(event: Event) -> Subject:
    """``user.created`` / ``user.updated``: a whole User, versioned by ``updated_at``."""
    user_id = required_id(event.data, "user event", "id")
    required_version(event.data, "user event")
    return Subject("user", user_id, user_id=user_id)


def deleted_user(event: Event) -> Subject:
    """``user.deleted``: ``{"deleted": true, "id": ..., "object": "user"}``, no version."""
    user_id = required_id(event.data, "user event", "id")
    return Subject("user", user_id, user_id=user_id)


def upsert_user(store: UserStore, event: Event, subject: Subject, delivery_id: str | None) -> Outcome:
    return store.upsert_if_newer(map_clerk_user(event.data, store.fields), delivery_id).outcome


def delete_user(store: UserStore, event: Event, subject: Subject, delivery_id: str | None) -> Outcome:
    return store.delete(subject.id, delivery_id)


def deletion_stub(event: Event, subject: Subject, body: bytes) -> str:
    """A deletion's record keeps only the user's id, not who deleted it from where
    (``event_attributes``): enough to replay it, nothing personal."""
    data = {"deleted": True, "id": subject.id, "object": "user"}
    return json.dumps({"type": event.type, "object": "event", "data": data})
