"""What happens to a verified delivery: parse, dispatch, store, record; and the webhook's
HTTP contract, in one table.

Both the webhook route and the ``replay`` command go through ``DeliveryHandler.handle``,
so ordering, tombstones and dedupe hold the same way for a live delivery and for an
operator's replay.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from .dispatch import Stores, body_text, route
from .events import MalformedEvent, Outcome, Subject, parse_event
from .metrics import Metrics
from .store.errors import ForeignIndexRefused, StoreUnavailable
from .store.eventlog import EventLog, EventRecord

log = logging.getLogger("webhook_service.delivery")


class Failure(StrEnum):
    """Each way a delivery can fail, as the HTTP body's ``error`` names it."""

    SIGNATURE = "invalid signature"
    MALFORMED = "malformed event"
    INDEX_CONFLICT = "index conflict"
    UNAVAILABLE = "database unavailable"
    INTERNAL = "internal error"


# The webhook's HTTP contract. A 4xx is final: Svix does not retry it, and nothing was
# written. A 5xx is retried by Svix (for about a day), which is right when the database is
# down or refused the write, or on a bug (the event is kept for replay). 200 for the rest.
STATUS = {
    Failure.SIGNATURE: 400,
    Failure.MALFORMED: 400,
    Failure.INDEX_CONFLICT: 503,
    Failure.UNAVAILABLE: 503,
    Failure.INTERNAL: 500,
}


@dataclass(slots=True)
class DeliveryResult:
    """How a delivery ended, and what Svix is told."""

    outcome: Outcome
    event_type: str | None = None
    subject: Subject | None = None
    failure: Failure | None = None
    error: str | None = None
    payload: str | None = None  # what the event log keeps of the body

    @property
    def status(self) -> int:
        return 200 if self.failure is None else STATUS[self.failure]

    @property
    def user_id(self) -> str | None:
        """The user the event names, if any."""
        return self.subject.user_id if self.subject is not None else None


class DeliveryHandler:
    def __init__(self, stores: Stores, events: EventLog, metrics: Metrics | None = None) -> None:
        self.stores = stores
        self.events = events
        self.metrics = metrics

    def handle(self, delivery_id: str, body: bytes) -> DeliveryResult:
        """Handle a delivery whose signature has already been verified."""
        started = time.perf_counter()
        result = self._decide(delivery_id, body)
        subject = result.subject
        self.events.record(
            EventRecord(
                delivery_id=delivery_id,
                event_type=result.event_type,
                subject=subject,
                outcome=result.outcome,
                payload=result.payload,
                error=result.error,
                received_at=datetime.now(UTC),
            )
        )
        elapsed = time.perf_counter() - started
        if self.metrics is not None:
            self.metrics.delivery(result.event_type, result.outcome.value, elapsed)
        status = result.status
        extra: dict[str, Any] = {
            "svix_id": delivery_id,
            "event_type": result.event_type,
            "user_id": result.user_id,
            "outcome": result.outcome.value,
            "status": status,
            "duration_ms": round(elapsed * 1000, 2),
            "error": result.error,
        }
        if subject is not None and subject.org_id is not None:
            extra["org_id"] = subject.org_id
        log.log(
            logging.WARNING if status >= 500 else logging.INFO,
            "delivery %s type=%s %s outcome=%s status=%d duration_ms=%.1f%s",
            delivery_id,
            result.event_type,
            _names(subject),
            result.outcome.value,
            status,
            elapsed * 1000,
            f" error={result.error}" if result.error else "",
            extra=extra,
        )
        return result

    def _decide(self, delivery_id: str, body: bytes) -> DeliveryResult:
        try:
            event = parse_event(body)
        except MalformedEvent as exc:
            return DeliveryResult(
                Outcome.REJECTED, failure=Failure.MALFORMED, error=str(exc), payload=body_text(body)
            )
        routed = route(self.stores, event.type)
        if routed is None:
            return DeliveryResult(Outcome.IGNORED, event.type)
        entry, store = routed
        try:
            subject = entry.subject(event)
        except MalformedEvent as exc:
            return DeliveryResult(
                Outcome.REJECTED,
                event.type,
                failure=Failure.MALFORMED,
                error=str(exc),
                payload=body_text(body),
            )
        kept = entry.keep(event, subject, body)
        try:
            outcome = entry.apply(store, event, subject, delivery_id)
        except ForeignIndexRefused as exc:
            if self.metrics is not None:
                self.metrics.index_conflict(exc.index)
            return DeliveryResult(Outcome.FAILED, event.type, subject, Failure.INDEX_CONFLICT, str(exc), kept)
        except StoreUnavailable as exc:
            if self.metrics is not None:
                self.metrics.db_error()
            return DeliveryResult(Outcome.FAILED, event.type, subject, Failure.UNAVAILABLE, str(exc), kept)
        except Exception as exc:  # a bug: keep the event for replay, tell Svix to retry
            log.exception("delivery %s failed unexpectedly", delivery_id)
            error = f"internal error: {type(exc).__name__}"
            return DeliveryResult(Outcome.FAILED, event.type, subject, Failure.INTERNAL, error, kept)
        return DeliveryResult(outcome, event.type, subject, payload=kept)


def _names(subject: Subject | None) -> str:
    """What the log line names: the user and, for organizations, the organization."""
    if subject is None or subject.org_id is None:
        return f"user={subject.user_id if subject is not None else None}"
    if subject.user_id is None:
        return f"org={subject.org_id}"
    return f"org={subject.org_id} user={subject.user_id}"
