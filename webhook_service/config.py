"""Configuration from the environment, validated once at start.

A missing or malformed required variable is a ConfigError whose message names the
variable; the entry points print it as one line and exit non-zero.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit

from cryptography.hazmat.primitives.serialization import load_pem_public_key
from svix.webhooks import Webhook

from .cascade import CascadeRule, parse_cascade_rules, refuse_deleting_kept
from .catalog import Declarations
from .fieldmap import FieldMap, FieldMapError, read_toml
from .resources.memberships.mapping import MembershipMap, parse_membership_map
from .resources.organizations.mapping import OrganizationMap, parse_organization_map
from .resources.users.mapping import load_user_fields
from .schema import SERVICE_COLLECTIONS, USERS

N = TypeVar("N", int, float)
# Every variable ``from_env`` reads (a unit test holds the two together). A process the
# tests or the bench start for the service drops the caller's values of these, so that
# only the settings it is given count.
SETTINGS = (
    "MONGODB_URI",
    "CLERK_WEBHOOK_SIGNING_SECRET",
    "CLERK_SECRET_KEY",
    "CLERK_JWT_KEY",
    "CLERK_AUTHORIZED_PARTIES",
    "CLERK_REQUIRE_AZP",
    "CLERK_API_URL",
    "EVENT_RETENTION_DAYS",
    "LOG_FORMAT",
    "DB_TIMEOUT_MS",
    "CLERK_TIMEOUT_MS",
    "CLERK_RETRY_BUDGET_MS",
    "SYNC_MIN_INTERVAL_S",
    "WATCH_INTERVAL_S",
    "WATCH_MAX_RPS",
    "INSERT_ONLY_FIELDS",
    "DELETE_CASCADE",
    "METRICS_ADDR",
    "USER_FIELDS_FILE",
    "ORGANIZATION_FIELDS_FILE",
)
# /metrics has a listener of its own, on loopback unless METRICS_ADDR says otherwise: the
# public port carries Clerk's webhooks and the app's sync, and nothing for strangers to read.
DEFAULT_METRICS_ADDR = ("127.0.0.1", 9464)


class ConfigError(ValueError):
    """A configuration variable is missing or unusable."""


@dataclass(frozen=True)
class Config:
    mongodb_uri: str
    webhook_signing_secret: str = field(repr=False)
    clerk_secret_key: str | None = field(default=None, repr=False)
    clerk_jwt_key: str | None = field(default=None, repr=False)
    authorized_parties: tuple[str, ...] = ()
    require_azp: bool = False
    clerk_api_url: str = "https://api.clerk.com"
    event_retention_days: float = 7.0
    log_format: str = "text"
    db_timeout_ms: int = 5000
    clerk_timeout_ms: int = 3000
    clerk_retry_budget_ms: int = 5000
    sync_min_interval_s: float = 10.0
    watch_interval_s: float = 60.0
    watch_max_rps: float = 1.0
    insert_only_fields: tuple[str, ...] = ()
    delete_cascade: tuple[CascadeRule, ...] = ()
    metrics_addr: tuple[str, int] | None = DEFAULT_METRICS_ADDR
    user_fields_file: str | None = None
    organization_fields_file: str | None = None
    # The maps the service writes by, read and checked once, when the config is made:
    # USER_FIELDS_FILE's or the built-in (xClone's) with INSERT_ONLY_FIELDS applied, and
    # ORGANIZATION_FIELDS_FILE's organizations and memberships (None without the file).
    user_fields: FieldMap = field(init=False, compare=False)
    organizations: OrganizationMap | None = field(init=False, compare=False, default=None)
    memberships: MembershipMap | None = field(init=False, compare=False, default=None)

    def __post_init__(self) -> None:
        try:
            fields = load_user_fields(self.user_fields_file)
        except FieldMapError as exc:
            raise ConfigError(f"USER_FIELDS_FILE: {exc}") from None
        try:
            fields = fields.with_insert_only(self.insert_only_fields)
        except ValueError as exc:
            raise ConfigError(f"INSERT_ONLY_FIELDS: {exc}") from None
        object.__setattr__(self, "user_fields", fields)
        if self.organization_fields_file:
            try:
                organizations, memberships = load_organization_file(self.organization_fields_file)
            except FieldMapError as exc:
                raise ConfigError(f"ORGANIZATION_FIELDS_FILE: {exc}") from None
            mirrored = {organizations.collection, *((memberships.collection,) if memberships else ())}
            try:
                for rule in self.delete_cascade:  # parsed before the organization file was read
                    refuse_deleting_kept(rule, mirrored)
            except ValueError as exc:
                raise ConfigError(f"DELETE_CASCADE: {exc}") from None
            object.__setattr__(self, "organizations", organizations)
            object.__setattr__(self, "memberships", memberships)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Config:
        env = os.environ if env is None else env
        config = cls(
            mongodb_uri=_required(env, "MONGODB_URI"),
            webhook_signing_secret=_required(env, "CLERK_WEBHOOK_SIGNING_SECRET"),
            clerk_secret_key=env.get("CLERK_SECRET_KEY", "").strip() or None,
            clerk_jwt_key=env.get("CLERK_JWT_KEY", "").replace("\\n", "\n").strip() or None,
            authorized_parties=tuple(
                p.strip() for p in env.get("CLERK_AUTHORIZED_PARTIES", "").split(",") if p.strip()
            ),
            require_azp=_flag(env, "CLERK_REQUIRE_AZP"),
            clerk_api_url=_api_base(env.get("CLERK_API_URL", "")) or cls.clerk_api_url,
            event_retention_days=_number(env, "EVENT_RETENTION_DAYS", 7.0, float),
            log_format=env.get("LOG_FORMAT", "text").strip().lower() or "text",
            db_timeout_ms=_number(env, "DB_TIMEOUT_MS", 5000, int),
            clerk_timeout_ms=_number(env, "CLERK_TIMEOUT_MS", 3000, int),
            clerk_retry_budget_ms=_number(env, "CLERK_RETRY_BUDGET_MS", 5000, int),
            sync_min_interval_s=_number(env, "SYNC_MIN_INTERVAL_S", 10.0, float),
            watch_interval_s=_number(env, "WATCH_INTERVAL_S", 60.0, float),
            watch_max_rps=_number(env, "WATCH_MAX_RPS", 1.0, float),
            insert_only_fields=_name_list(env.get("INSERT_ONLY_FIELDS", "")),
            delete_cascade=_cascade(env.get("DELETE_CASCADE", "")),
            metrics_addr=_listen_address(env.get("METRICS_ADDR", "")),
            user_fields_file=env.get("USER_FIELDS_FILE", "").strip() or None,
            organization_fields_file=env.get("ORGANIZATION_FIELDS_FILE", "").strip() or None,
        )
        config.validate()
        return config

    def validate(self) -> None:
        """Fail fast, naming the variable, on anything the service could not run with."""
        if not self.mongodb_uri.startswith(("mongodb://", "mongodb+srv://")):
            raise ConfigError("MONGODB_URI must start with mongodb:// or mongodb+srv://")
        if not urlsplit(self.mongodb_uri).path.strip("/"):
            raise ConfigError("MONGODB_URI must name the database in its path, e.g. /xclone")
        try:
            _strict_base64(self.webhook_signing_secret.removeprefix("whsec_"))
            Webhook(self.webhook_signing_secret)
        except Exception as exc:
            raise ConfigError("CLERK_WEBHOOK_SIGNING_SECRET is not a valid whsec_ secret") from exc
        if self.clerk_jwt_key:
            try:
                load_pem_public_key(self.clerk_jwt_key.encode())
            except Exception as exc:
                raise ConfigError("CLERK_JWT_KEY is not a PEM public key") from exc
        if urlsplit(self.clerk_api_url).scheme not in ("http", "https"):
            raise ConfigError("CLERK_API_URL must be an http(s) URL")
        if self.log_format not in ("text", "json"):
            raise ConfigError("LOG_FORMAT must be 'text' or 'json'")
        if self.event_retention_days <= 0:
            raise ConfigError("EVENT_RETENTION_DAYS must be positive")
        if not 0 <= self.sync_min_interval_s <= 86_400:
            raise ConfigError("SYNC_MIN_INTERVAL_S must be between 0 (off) and 86400 seconds")
        if not 0 <= self.watch_interval_s <= 86_400:
            raise ConfigError("WATCH_INTERVAL_S must be between 0 (off) and 86400 seconds")
        if self.watch_max_rps < 0:
            raise ConfigError("WATCH_MAX_RPS must be 0 (unpaced) or more requests per second")

    @property
    def watch_off_reason(self) -> str | None:
        """Why the watcher does not run, or None when it does."""
        if not self.watch_interval_s:
            return "WATCH_INTERVAL_S is 0"
        if not self.clerk_secret_key:
            return "CLERK_SECRET_KEY is not set"
        return None

    @property
    def declared(self) -> Declarations:
        """What the service keeps for this app (see ``catalog``)."""
        return Declarations(self.user_fields, self.delete_cascade, self.organizations, self.memberships)

    @property
    def clerk_server_url(self) -> str:
        """The SDK's ``server_url``: paths such as ``/users`` are appended to it."""
        return self.clerk_api_url.rstrip("/") + "/v1"


def _strict_base64(text: str) -> None:
    """svix decodes leniently (junk characters are skipped), so a pasted API key would
    pass as a signing secret and every delivery would then fail verification."""
    if not text or not base64.b64decode(text + "=" * (-len(text) % 4), validate=True):
        raise ValueError("empty or not base64")


def _api_base(raw: str) -> str:
    """Accept ``https://api.clerk.com`` with or without ``/v1``: a doubled ``/v1/v1`` would
    make every user look missing (404), and sync deletes users Clerk says are gone."""
    base = raw.strip().rstrip("/")
    return base[: -len("/v1")] if base.endswith("/v1") else base


def _listen_address(raw: str) -> tuple[str, int] | None:
    """``host:port`` (``[::1]:9464`` for IPv6), or ``off``; empty means the default."""
    text = raw.strip()
    if not text:
        return DEFAULT_METRICS_ADDR
    if text.lower() == "off":
        return None
    try:
        parts = urlsplit("//" + text)
        host, port = parts.hostname, parts.port
    except ValueError:  # a port that is not a number, or out of range
        host = port = None
    if not host or not port or parts.path or parts.username:
        raise ConfigError(f"METRICS_ADDR must be host:port (e.g. 0.0.0.0:9464) or off, got {text!r}")
    return host, port


def _flag(env: Mapping[str, str], name: str) -> bool:
    raw = env.get(name, "").strip().lower()
    if raw in ("", "0", "false", "no", "off"):
        return False
    if raw in ("1", "true", "yes", "on"):
        return True
    raise ConfigError(f"{name} must be true or false, got {raw!r}")


def load_organization_file(path: str | Path) -> tuple[OrganizationMap, MembershipMap | None]:
    """``ORGANIZATION_FIELDS_FILE``: the organizations, and the memberships when its
    ``[memberships]`` table declares them; FieldMapError names the file and the entry."""
    data = read_toml(path)
    try:
        organizations = parse_organization_map(data, owned=SERVICE_COLLECTIONS, kept=(USERS,))
        memberships = None
        if "memberships" in data:
            taken = (*SERVICE_COLLECTIONS, USERS, organizations.collection)
            memberships = parse_membership_map(data["memberships"], taken=taken)
    except FieldMapError as exc:
        raise FieldMapError(f"{path}: {exc}") from None
    return organizations, memberships


def delete_cascade_rules(text: str) -> tuple[CascadeRule, ...]:
    """``DELETE_CASCADE``'s rules; ValueError names a bad one. The service's own collections
    are off limits, and a rule may pull or unset on ``users`` but not delete other users."""
    return parse_cascade_rules(text, owned=SERVICE_COLLECTIONS, kept=(USERS,))


def _cascade(raw: str) -> tuple[CascadeRule, ...]:
    try:
        return delete_cascade_rules(raw)
    except ValueError as exc:
        raise ConfigError(f"DELETE_CASCADE: {exc}") from None


def _name_list(raw: str) -> tuple[str, ...]:
    """A comma-separated list: blanks trimmed, empties dropped, duplicates removed in order."""
    return tuple(dict.fromkeys(name.strip() for name in raw.split(",") if name.strip()))


def _required(env: Mapping[str, str], name: str) -> str:
    value = env.get(name, "").strip()
    if not value:
        raise ConfigError(f"{name} is not set")
    return value


def _number(env: Mapping[str, str], name: str, default: N, kind: Callable[[str], N]) -> N:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        return kind(raw)
    except ValueError as exc:
        raise ConfigError(f"{name} must be a number, got {raw!r}") from exc
