"""Errors the store raises; callers answer 503 for them so that Svix retries."""

from __future__ import annotations

import re
from typing import Literal

from pymongo.errors import BulkWriteError, DuplicateKeyError, PyMongoError

_DUPLICATE_INDEX = re.compile(r"index: (\S+) dup key")


class StoreUnavailable(Exception):
    """The database did not answer in time or refused the write. Retrying later is safe."""


class ContestedWrite(StoreUnavailable):
    """A write still contested (a username clash, an insert race) after a few attempts;
    a retry will converge."""


class ForeignIndexRefused(StoreUnavailable):
    """A unique index the service does not own refused a write (e.g. xClone's unique
    ``email_1``). Retrying is right: Svix redelivers once ``init-db --migrate`` ran."""

    def __init__(self, index: str, collection: str) -> None:
        super().__init__(
            f"write refused by unique index {collection}.{index}, which contradicts the service's rules; "
            "run `flask --app wsgi init-db --migrate`"
        )
        self.index = index


class _UnavailableOnError:
    """Turn any driver failure into StoreUnavailable, so callers answer 503. A class, not a
    ``contextmanager`` generator: it is entered on every write, and one shared instance
    costs nothing to enter."""

    def __enter__(self) -> None:
        return None

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: object
    ) -> Literal[False]:
        if exc is None or isinstance(exc, DuplicateKeyError) or not isinstance(exc, PyMongoError):
            return False
        raise StoreUnavailable(f"database error: {type(exc).__name__}") from exc


_UNAVAILABLE_ON_ERROR = _UnavailableOnError()


def unavailable_on_error() -> _UnavailableOnError:
    """``with unavailable_on_error():``: driver failures become StoreUnavailable."""
    return _UNAVAILABLE_ON_ERROR


def key_clashes(exc: BulkWriteError, what: str) -> list[int]:
    """The positions a bulk write refused for a duplicate key; any other error is raised,
    and so is a write concern error: the writes landed but are not yet durable, so the page
    is not done (rerunning it is safe)."""
    if exc.details.get("writeConcernErrors"):
        raise StoreUnavailable(f"{what} not acknowledged by a majority: WriteConcernError") from exc
    positions = []
    for error in exc.details.get("writeErrors", []):
        if error.get("code") != 11000:
            raise StoreUnavailable(f"{what} failed: {error.get('errmsg')}") from exc
        positions.append(error["index"])
    return positions


def foreign_index_refusal(exc: DuplicateKeyError, collection: str) -> ForeignIndexRefused:
    """A unique index the service does not own refused the write. Named, never quoted:
    the error's key value is user data (an email address, say)."""
    details = exc.details or {}
    match = _DUPLICATE_INDEX.search(str(details.get("errmsg") or ""))
    name = match[1] if match else "_".join(f"{k}_{v}" for k, v in (details.get("keyPattern") or {}).items())
    return ForeignIndexRefused(name, collection)
