"""Usernames: which one a user gets, and who keeps a contested one.

Clerk keeps its usernames unique; the app's ``users`` collection must keep them unique
too (case-blind), and also holds names the service derives for users without one.
Plain functions over plain data.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from enum import StrEnum
from typing import Any, Protocol

USERNAME_MAX = 30
_NOT_USERNAME_CHARS = re.compile(r"[^a-z0-9_]+")


class Claimant(Protocol):
    """A user version claiming a username (``LocalUser``)."""

    @property
    def clerk_id(self) -> str: ...

    @property
    def clerk_updated_at(self) -> int: ...

    @property
    def username_source(self) -> UsernameSource | None: ...


class UsernameSource(StrEnum):
    """Where a local username came from; Clerk's own usernames outrank derived ones."""

    CLERK = "clerk"
    EMAIL = "email"
    FALLBACK = "fallback"


def normalise_username(raw: str) -> str:
    """Lower-case, keep [a-z0-9_], squeeze the rest to one underscore, cap the length."""
    name = _NOT_USERNAME_CHARS.sub("_", raw.lower()).strip("_")
    return name[:USERNAME_MAX].rstrip("_")


def email_username(email: str) -> str:
    """The username derived from an email's local part, without any ``+tag``."""
    local = email.split("@", 1)[0].split("+", 1)[0]
    return normalise_username(local)


def fallback_username(clerk_id: str) -> str:
    """A stable username for users with neither a Clerk username nor an email."""
    return f"user_{_id_suffix(clerk_id, 10)}"


def disambiguated_username(base: str, clerk_id: str) -> str:
    """The deterministic alternative a user gets when ``base`` belongs to someone else."""
    suffix = _id_suffix(clerk_id, 6)
    return f"{base[: USERNAME_MAX - len(suffix) - 1]}_{suffix}"


def _id_suffix(clerk_id: str, length: int) -> str:
    return hashlib.sha256(clerk_id.encode()).hexdigest()[:length]


def choose_username(user: Mapping[str, Any], email: str | None) -> tuple[str, UsernameSource]:
    """Clerk's username when set, else the email's local part, else a fallback from the id."""
    clerk_name = user.get("username")
    if isinstance(clerk_name, str) and clerk_name.strip():
        return clerk_name.strip(), UsernameSource.CLERK
    if email:
        derived = email_username(email)
        if derived:
            return derived, UsernameSource.EMAIL
    return fallback_username(user["id"]), UsernameSource.FALLBACK


def claim_beats_holder(
    claimant: Claimant, holder_source: str | None, holder_updated_at: int, holder_clerk_id: str
) -> bool:
    """Decide whether a claimant takes a username that another local user holds.

    Clerk keeps its usernames unique at every instant, so when two versions claim
    the same Clerk username the older one is already out of date: the newer wins.
    A name Clerk set outranks one we derived. Between two derived names the holder
    keeps it, so nobody's handle changes because someone else signed up. The loser
    takes its deterministic disambiguated name until its next event.
    """
    claimant_is_clerk = claimant.username_source is UsernameSource.CLERK
    holder_is_clerk = holder_source == UsernameSource.CLERK.value
    if claimant_is_clerk != holder_is_clerk:
        return claimant_is_clerk
    if not claimant_is_clerk:
        return False
    if claimant.clerk_updated_at != holder_updated_at:
        return claimant.clerk_updated_at > holder_updated_at
    return claimant.clerk_id < holder_clerk_id
