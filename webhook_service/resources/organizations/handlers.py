"""What each ``organization.*`` event means. Registered in ``dispatch.EVENT_TYPES``."""

from __future__ import annotations

import json

from ...events import Event, Outcome, Subject, required_id, required_version
from .mapping import map_organization
from .store import OrganizationStore


def changed_organization(event: Event) -> Subject:
    """``organization.created`` / ``.updated``: a whole Organization, versioned by ``updated_at``."""
    org_id = required_id(event.data, "organization event", "id")
    required_version(event.data, "organization event")
    return Subject("organization", org_id, org_id=org_id)


def deleted_organization(event: Event) -> Subject:
    """``organization.deleted``: ``{"deleted": true, "id": ...}``, no version; Clerk's schema
    does not even require the id, so one without it is refused."""
    org_id = required_id(event.data, "organization event", "id")
    return Subject("organization", org_id, org_id=org_id)


def upsert_organization(
    store: OrganizationStore, event: Event, subject: Subject, delivery_id: str | None
) -> Outcome:
    return store.upsert_if_newer(map_organization(event.data, store.fields), delivery_id).outcome


def delete_organization(
    store: OrganizationStore, event: Event, subject: Subject, delivery_id: str | None
) -> Outcome:
    return store.delete(subject.id, delivery_id)


def deletion_stub(event: Event, subject: Subject, body: bytes) -> str:
    """A deletion's record keeps the organization's id, enough to replay it."""
    data = {"deleted": True, "id": subject.id, "object": "organization"}
    return json.dumps({"type": event.type, "object": "event", "data": data})
