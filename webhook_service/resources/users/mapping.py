"""What a Clerk User object becomes in the app's ``users`` collection.

The app declares it in a field map (``USER_FIELDS_FILE``); without one the built-in map,
``fields.toml`` beside this module, is xClone's. The ``$names`` a user map may use are
the ``DERIVED`` table below. Plain functions over plain data.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from importlib.resources import files
from pathlib import Path
from typing import Any

from ...bookkeeping import USERNAME_LOWER, USERNAME_SOURCE
from ...fieldmap import Derived, FieldMap, FieldMapError, check_keys, field_name, parse_fields, read_toml
from ...mirror.records import Record
from .usernames import UsernameSource, choose_username


def primary_email(user: Mapping[str, Any]) -> str | None:
    """The address whose id is ``primary_email_address_id``; None for phone or web3 users."""
    primary_id = user.get("primary_email_address_id")
    if not primary_id:
        return None
    addresses = user.get("email_addresses")
    for address in addresses if isinstance(addresses, list) else ():
        if isinstance(address, Mapping) and address.get("id") == primary_id:
            value = address.get("email_address")
            return value if isinstance(value, str) and value else None
    return None


def primary_phone(user: Mapping[str, Any]) -> str | None:
    """The number whose id is ``primary_phone_number_id``; None for users without one."""
    primary_id = user.get("primary_phone_number_id")
    numbers = user.get("phone_numbers")
    for number in numbers if primary_id and isinstance(numbers, list) else ():
        if isinstance(number, Mapping) and number.get("id") == primary_id:
            value = number.get("phone_number")
            return value if isinstance(value, str) and value else None
    return None


def full_name(user: Mapping[str, Any]) -> str | None:
    """First and last name, as Clerk's own ``fullName`` joins them; None when both are blank."""
    parts = [p.strip() for p in (user.get("first_name"), user.get("last_name")) if isinstance(p, str)]
    return " ".join(p for p in parts if p) or None


USERNAME = "$username"
# The values a user map may name as ``$name``. The username is the store's to settle (it
# must stay unique), so it has no reader here and appears at most once.
DERIVED = {
    "$primary_email": Derived(primary_email),
    "$primary_phone": Derived(primary_phone),
    USERNAME: Derived(None, once=True, bare=True),
    "$full_name": Derived(full_name),
}
_TOP_KEYS = ("identity", "references", "fields")


@dataclass(slots=True)
class LocalUser(Record):
    """A Clerk user as the app's document holds it. ``values`` hold the username fields too
    (the map's username field, ``usernameLower`` and ``usernameSource``) when the map has one."""

    username: str | None = None
    username_source: UsernameSource | None = None

    @property
    def clerk_id(self) -> str:
        return self.key

    @property
    def clerk_updated_at(self) -> int:
        return self.version

    def with_username(self, field: str, username: str) -> LocalUser:
        """This version claiming ``username`` instead (settling a clash)."""
        values = {**self.values, field: username, USERNAME_LOWER: username.lower()}
        return replace(self, values=values, username=username)


def map_clerk_user(user: Mapping[str, Any], fields: FieldMap) -> LocalUser:
    """Map a Clerk User object (webhook ``data`` or Backend API) through the field map."""
    values, absent = fields.values_of(user)
    username, source = None, None
    field = fields.target_of(USERNAME)
    if field is not None:
        username, source = choose_username(user, primary_email(user))
        values[field] = username
        values[USERNAME_LOWER] = username.lower()
        values[USERNAME_SOURCE] = source.value
    return LocalUser(
        key=user["id"],
        version=int(user["updated_at"]),
        values=values,
        absent=absent,
        username=username,
        username_source=source,
    )


def builtin_path() -> Path:
    return Path(str(files(__package__).joinpath("fields.toml")))


def load_user_fields(path: str | Path | None = None) -> FieldMap:
    """The user map in ``path``, or the built-in one; FieldMapError names what is wrong."""
    source = Path(path) if path else builtin_path()
    data = read_toml(source)
    try:
        return parse_user_fields(data)
    except FieldMapError as exc:
        raise FieldMapError(f"{source}: {exc}") from None


def parse_user_fields(data: Mapping[str, Any]) -> FieldMap:
    check_keys(data, _TOP_KEYS)
    identity = field_name(data.get("identity", "clerkId"), "identity")
    references = data.get("references", [])
    if not isinstance(references, list):
        raise FieldMapError("references must be a list of field names")
    refs = tuple(field_name(name, f"references[{i}]") for i, name in enumerate(references))
    for i, name in enumerate(refs):
        if name == identity:
            raise FieldMapError(f"references[{i}]: {name!r} is the identity field")
    specs = parse_fields(data.get("fields"), "fields", DERIVED, identity=(identity,))
    return FieldMap((identity,), refs, specs)
