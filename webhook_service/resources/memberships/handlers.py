"""What each ``organizationMembership.*`` event means. Registered in ``dispatch.EVENT_TYPES``.

All three carry the whole membership, ``.deleted`` included. Its ``updated_at`` is the
membership's last change, not when it was deleted: the deletion is dated by the
envelope's ``timestamp``.
"""

from __future__ import annotations

import json

from ...events import Event, MalformedEvent, Outcome, Subject, required_id, required_version
from .mapping import map_membership, membership_key
from .store import MembershipStore

WHAT = "membership event"


def _subject(event: Event) -> Subject:
    org_id = required_id(event.data, WHAT, "organization", "id")
    user_id = required_id(event.data, WHAT, "public_user_data", "user_id")
    return Subject("membership", membership_key(org_id, user_id), user_id=user_id, org_id=org_id)


def changed_membership(event: Event) -> Subject:
    """``.created`` / ``.updated``: versioned by the membership's ``updated_at``."""
    subject = _subject(event)
    required_version(event.data, WHAT)
    return subject


def deleted_membership(event: Event) -> Subject:
    """``.deleted``: dated by the envelope's ``timestamp`` (milliseconds, or seconds)."""
    subject = _subject(event)
    if event.timestamp_ms is None:
        raise MalformedEvent(f"{event.type} has no integer 'timestamp', the time of the deletion")
    return subject


def upsert_membership(
    store: MembershipStore, event: Event, subject: Subject, delivery_id: str | None
) -> Outcome:
    return store.upsert_if_newer(map_membership(event.data, store.memberships), delivery_id).outcome


def delete_membership(
    store: MembershipStore, event: Event, subject: Subject, delivery_id: str | None
) -> Outcome:
    return store.delete(subject.id, delivery_id, at=event.timestamp_ms)


def deletion_stub(event: Event, subject: Subject, body: bytes) -> str:
    """A deletion's record keeps what replaying it needs, the ids and the envelope's
    ``timestamp``, and not the member's name, image or identifier."""
    data = {
        "object": "organization_membership",
        "id": event.data.get("id"),
        "organization": {"id": subject.org_id},
        "public_user_data": {"user_id": subject.user_id},
    }
    return json.dumps({"type": event.type, "object": "event", "timestamp": event.timestamp, "data": data})
