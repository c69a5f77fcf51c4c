"""What happens to a verified delivery: parse, decide, store, record.

Both the webhook route and the ``replay`` command go through ``DeliveryHandler.handle``,
so ordering, tombstones and dedupe hold the same way for a live delivery and for an
operator's replay.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass

from .domain import (
    USER_EVENT_TYPES,
    Event,
    MalformedEvent,
    Outcome,
    map_clerk_user,
    parse_event,
    redacted_deletion,
)
from .metrics import Metrics
from .store import EventLog, EventRecord, ForeignIndexRefused, StoreUnavailable, UserStore

log = logging.getLogger("webhook_service.delivery")


@dataclass(frozen=True)
class DeliveryResult:
    """How a delivery ended, and the HTTP status that tells Svix whether to retry."""

    outcome: Outcome
    status: int
    event_type: str | None = None
    user_id: str | None = None
    error: str | None = None
    title: str | None = None  # the error's short name for the HTTP body, when not the status's


def apply_user_event(store: UserStore, event: Event, delivery_id: str | None) -> Outcome:
    """Apply one Clerk event to the users collection; other event types change nothing."""
    if event.type not in USER_EVENT_TYPES:
        return Outcome.IGNORED
    if event.type == "user.deleted":
        return store.delete(event.data["id"], delivery_id)
    return store.upsert_if_newer(map_clerk_user(event.data, store.fields), delivery_id).outcome


def kept_payload(result: DeliveryResult, body: bytes) -> str | None:
    """What the event log keeps of a body, for replay and no more. An ignored event's
    body is not needed again and is not kept; a deletion keeps only the user's id, not
    who deleted it from where (``event_attributes``)."""
    if result.outcome is Outcome.IGNORED:
        return None
    if result.event_type == "user.deleted" and result.user_id is not None:
        event = {"type": "user.deleted", "object": "event", "data": redacted_deletion(result.user_id)}
        return json.dumps(event)
    return body.decode("utf-8", errors="replace")


class DeliveryHandler:
    def __init__(self, store: UserStore, events: EventLog, metrics: Metrics | None = None) -> None:
        self.store = store
        self.events = events
        self.metrics = metrics

    def handle(self, delivery_id: str, body: bytes) -> DeliveryResult:
        """Handle a delivery whose signature has already been verified."""
        started = time.perf_counter()
        result = self._decide(delivery_id, body)
        self.events.record(
            EventRecord(
                delivery_id=delivery_id,
                event_type=result.event_type,
                user_id=result.user_id,
                outcome=result.outcome,
                payload=kept_payload(result, body),
                error=result.error,
            )
        )
        elapsed = time.perf_counter() - started
        if self.metrics is not None:
            self.metrics.delivery(result.event_type, result.outcome.value, elapsed)
        log.log(
            logging.WARNING if result.status >= 500 else logging.INFO,
            "delivery %s type=%s user=%s outcome=%s status=%d duration_ms=%.1f%s",
            delivery_id,
            result.event_type,
            result.user_id,
            result.outcome.value,
            result.status,
            elapsed * 1000,
            f" error={result.error}" if result.error else "",
            extra={
                "svix_id": delivery_id,
                "event_type": result.event_type,
                "user_id": result.user_id,
                "outcome": result.outcome.value,
                "status": result.status,
                "duration_ms": round(elapsed * 1000, 2),
                "error": result.error,
            },
        )
        return result

    def _decide(self, delivery_id: str, body: bytes) -> DeliveryResult:
        try:
            event = parse_event(body)
        except MalformedEvent as exc:
            return DeliveryResult(Outcome.REJECTED, 400, error=str(exc))
        try:
            outcome = apply_user_event(self.store, event, delivery_id)
        except ForeignIndexRefused as exc:
            if self.metrics is not None:
                self.metrics.index_conflict(exc.index)
            return DeliveryResult(Outcome.FAILED, 503, event.type, event.user_id, str(exc), "index conflict")
        except StoreUnavailable as exc:
            if self.metrics is not None:
                self.metrics.db_error()
            return DeliveryResult(Outcome.FAILED, 503, event.type, event.user_id, str(exc))
        except Exception as exc:  # a bug: keep the event for replay, tell Svix to retry
            log.exception("delivery %s failed unexpectedly", delivery_id)
            error = f"internal error: {type(exc).__name__}"
            return DeliveryResult(Outcome.FAILED, 500, event.type, event.user_id, error)
        return DeliveryResult(outcome, 200, event.type, event.user_id)
