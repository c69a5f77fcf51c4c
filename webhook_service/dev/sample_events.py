"""Realistic Clerk payloads and Svix signatures, for ``send-test-event``, tests and benchmarks.

The builders return JSON-able dicts shaped exactly like Clerk's Backend API responses
and webhook payloads, complete enough for the strict pydantic models of
``clerk-backend-api`` (``models.User`` requires ~35 keys).
"""

from __future__ import annotations

import base64
import gc
import hashlib
import json
import secrets
import time
import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from enum import Enum
from typing import Any

from svix.webhooks import Webhook

# ---------------------------------------------------------------------------
# Ids
# ---------------------------------------------------------------------------

_BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_KSUID_EPOCH = 1_400_000_000  # seconds; KSUID's custom epoch
_KSUID_LEN = 27


_BASE62_PAIRS = tuple(a + b for a in _BASE62 for b in _BASE62)  # 62**2 two-char digits


def _ksuid(timestamp_s: int, payload: bytes) -> str:
    """Encode a KSUID (4-byte timestamp + 16-byte payload) as 27 base62 chars."""
    ts = max(0, min(timestamp_s - _KSUID_EPOCH, 0xFFFFFFFF))
    n = int.from_bytes(ts.to_bytes(4, "big") + payload[:16].ljust(16, b"\0"), "big")
    out: list[str] = []
    while n:
        n, rem = divmod(n, 3844)
        out.append(_BASE62_PAIRS[rem])
    return "".join(reversed(out)).lstrip("0").rjust(_KSUID_LEN, "0")


def digest(*parts: object) -> bytes:
    """Stable 64-byte digest of ``parts`` (the source of all derived values)."""
    return hashlib.sha512("\x1f".join(map(str, parts)).encode()).digest()


def clerk_id(prefix: str, seed: object = None, *, timestamp_ms: int | None = None) -> str:
    """Return a Clerk-style id such as ``user_2abc…`` (prefix + KSUID).

    Deterministic when ``seed`` is given; random otherwise.
    """
    payload = digest(prefix, seed)[:16] if seed is not None else secrets.token_bytes(16)
    ts_ms = timestamp_ms if timestamp_ms is not None else int(time.time() * 1000)
    return f"{prefix}_{_ksuid(ts_ms // 1000, payload)}"


DEFAULT_INSTANCE_ID = clerk_id("ins", "fake-clerk-instance", timestamp_ms=1_700_000_000_000)
DEFAULT_SECRET_KEY = "sk_test_" + base64.b32encode(digest("fake-clerk-secret")[:25]).decode().lower()

# ---------------------------------------------------------------------------
# Payload builders
# ---------------------------------------------------------------------------


class _Auto(Enum):
    """Sentinel type: "derive a realistic value" (distinct from an explicit None)."""

    AUTO = "AUTO"


AUTO = _Auto.AUTO

_FIRST_NAMES = ("Ada", "Grace", "Alan", "Linus", "Margaret", "Ken", "Barbara", "Dennis", "Edsger", "Frances")
_LAST_NAMES = ("Lovelace", "Hopper", "Turing", "Torvalds", "Hamilton", "Thompson", "Liskov", "Ritchie")
EPOCH_2023_MS = 1_672_531_200_000
_TWO_YEARS_MS = 2 * 365 * 86_400_000
_OTP_TTL_MS = 600_000


def u32(d: bytes, i: int) -> int:
    return int.from_bytes(d[4 * i : 4 * i + 4], "big")


def derived_timestamps(d: bytes, created_at: int | None, updated_at: int | None) -> tuple[int, int]:
    """``created_at`` and ``updated_at`` as given, or derived from the digest ``d``: created
    within two years from 2023, updated within a second after. Users and organizations
    derive theirs alike, so that the samples stay plausible beside each other."""
    if created_at is None:
        created_at = EPOCH_2023_MS + u32(d, 0) % _TWO_YEARS_MS
    if updated_at is None:
        updated_at = created_at + u32(d, 1) % 1000
    return created_at, updated_at


def _email_address(
    address: str, ident: str, created_at: int, *, strategy: str = "email_code"
) -> dict[str, Any]:
    """One ``email_address`` object as Clerk returns it, verified by OTP."""
    return {
        "id": ident,
        "object": "email_address",
        "email_address": address,
        "reserved": False,
        "verification": {
            "object": "verification_otp",
            "status": "verified",
            "strategy": strategy,
            "attempts": None,
            "expire_at": created_at + _OTP_TTL_MS,
        },
        "linked_to": [],
        "matches_sso_connection": False,
        "created_at": created_at,
        "updated_at": created_at,
    }


def _phone_number(number: str, ident: str, created_at: int) -> dict[str, Any]:
    """One ``phone_number`` object as Clerk returns it, verified by SMS code."""
    return {
        "id": ident,
        "object": "phone_number",
        "phone_number": number,
        "reserved_for_second_factor": False,
        "default_second_factor": False,
        "reserved": False,
        "verification": {
            "object": "verification_otp",
            "status": "verified",
            "strategy": "phone_code",
            "attempts": 1,
            "expire_at": created_at + _OTP_TTL_MS,
        },
        "linked_to": [],
        "backup_codes": None,
        "created_at": created_at,
        "updated_at": created_at,
    }


def _default_image_url(user_id: str, initials: str) -> str:
    """Clerk's default-avatar URL: img.clerk.com + base64url JSON descriptor."""
    desc = {"type": "default", "iid": DEFAULT_INSTANCE_ID, "rid": user_id, "initials": initials}
    token = base64.urlsafe_b64encode(json.dumps(desc, separators=(",", ":")).encode()).decode()
    return "https://img.clerk.com/" + token.rstrip("=")


def make_clerk_user(
    user_id: str | None = None,
    *,
    seed: object = None,
    email: str | None | _Auto = AUTO,
    username: str | None = None,
    first_name: str | None | _Auto = AUTO,
    last_name: str | None | _Auto = AUTO,
    image_url: str | None = None,
    created_at: int | None = None,
    updated_at: int | None = None,
    extra_emails: Sequence[str] = (),
    primary_first: bool = True,
    phone_only: bool = False,
    phone_number: str | None = None,
    external_id: str | None = None,
    public_metadata: Mapping[str, Any] | None = None,
    private_metadata: Mapping[str, Any] | None = None,
    unsafe_metadata: Mapping[str, Any] | None = None,
    last_sign_in_at: int | None = None,
    banned: bool = False,
    locked: bool = False,
    **overrides: Any,
) -> dict[str, Any]:
    """Build a complete Clerk User object (Backend API / webhook ``data`` shape).

    Everything not given is derived from ``user_id`` or ``seed`` (deterministic)
    or from random bytes when neither is given.  ``email=AUTO`` derives an
    address, ``email=None`` gives no primary email.  ``primary_first=False``
    puts the primary address after ``extra_emails``.  ``phone_only=True`` gives
    a user with a verified phone, no emails and ``primary_email_address_id``
    None.  Timestamps are Unix ms; unseeded users get ``created_at`` = now.
    ``overrides`` replace top-level keys verbatim.
    """
    deterministic = user_id is not None or seed is not None
    key: object = user_id if user_id is not None else (seed if seed is not None else secrets.token_hex(16))
    d = digest("user", key)
    if created_at is None and not deterministic:
        created_at = int(time.time() * 1000)
    created_at, updated_at = derived_timestamps(d, created_at, updated_at)
    if user_id is None:
        user_id = f"user_{_ksuid(created_at // 1000, d[16:32])}"

    if first_name is AUTO:
        first_name = _FIRST_NAMES[d[8] % len(_FIRST_NAMES)]
    if last_name is AUTO:
        last_name = _LAST_NAMES[d[9] % len(_LAST_NAMES)]
    tag = d[10:13].hex()
    if phone_only:
        email = None
        extra_emails = ()
        if phone_number is None:
            phone_number = f"+1555{u32(d, 3) % 10_000_000:07d}"
    elif email is AUTO:
        local = ".".join(p.lower() for p in (first_name, last_name) if p) or "user"
        email = f"{local}.{tag}@example.com"

    def ident(kind: str, value: str) -> str:
        return f"idn_{_ksuid(created_at // 1000, digest(key, kind, value)[:16])}"

    primary_email = _email_address(email, ident("email", email), created_at) if email is not None else None
    extras = [_email_address(a, ident("email", a), created_at + 1 + i) for i, a in enumerate(extra_emails)]
    if primary_email is None:
        emails = extras
    else:
        emails = [primary_email, *extras] if primary_first else [*extras, primary_email]
    phones = [_phone_number(phone_number, ident("phone", phone_number), created_at)] if phone_number else []

    initials = "".join(p[0].upper() for p in (first_name, last_name) if p)
    has_image = image_url is not None
    if image_url is None:
        image_url = _default_image_url(user_id, initials)
    password_enabled = primary_email is not None

    user: dict[str, Any] = {
        "id": user_id,
        "object": "user",
        "username": username,
        "first_name": first_name,
        "last_name": last_name,
        "locale": None,
        "image_url": image_url,
        "profile_image_url": image_url,
        "has_image": has_image,
        "primary_email_address_id": primary_email["id"] if primary_email else None,
        "primary_phone_number_id": phones[0]["id"] if phones else None,
        "primary_web3_wallet_id": None,
        "password_enabled": password_enabled,
        "password_last_updated_at": created_at if password_enabled else None,
        "two_factor_enabled": False,
        "totp_enabled": False,
        "backup_code_enabled": False,
        "mfa_enabled_at": None,
        "mfa_disabled_at": None,
        "email_addresses": emails,
        "phone_numbers": phones,
        "web3_wallets": [],
        "passkeys": [],
        "external_accounts": [],
        "saml_accounts": [],
        "enterprise_accounts": [],
        "public_metadata": dict(public_metadata or {}),
        "private_metadata": dict(private_metadata or {}),
        "unsafe_metadata": dict(unsafe_metadata or {}),
        "external_id": external_id,
        "last_sign_in_at": last_sign_in_at,
        "banned": banned,
        "locked": locked,
        "lockout_expires_in_seconds": None,
        "verification_attempts_remaining": 100,
        "created_at": created_at,
        "updated_at": updated_at,
        "delete_self_enabled": True,
        "create_organization_enabled": True,
        "create_organizations_limit": None,
        "last_active_at": last_sign_in_at,
        "legal_accepted_at": None,
        "bypass_client_trust": False,
    }
    user.update(overrides)
    return user


def make_users(
    n: int, *, seed: object = 0, start_ms: int = EPOCH_2023_MS, step_ms: int = 1000, **kwargs: Any
) -> list[dict[str, Any]]:
    """Build ``n`` deterministic users with ``created_at = start_ms + i * step_ms``."""
    gc_was_enabled = gc.isenabled()
    gc.disable()  # ~2.5x faster for 100k users: no cyclic garbage is created here
    try:
        return [
            make_clerk_user(seed=f"{seed}:{i}", created_at=start_ms + i * step_ms, **kwargs) for i in range(n)
        ]
    finally:
        if gc_was_enabled:
            gc.enable()


_SAMPLE_START_MS = 1_730_000_000_000  # 2024-10-27


def sample_users() -> list[dict[str, Any]]:
    """The local Clerk's users, the same on every run: webhooks, sync and reconcile in
    development all tell the story of these people."""
    day = 86_400_000
    return [
        make_clerk_user(
            seed="sample:ada", email="ada@example.com", username="ada", first_name="Ada",
            last_name="Lovelace", created_at=_SAMPLE_START_MS,
        ),
        make_clerk_user(
            seed="sample:grace", email="grace.hopper@example.com", extra_emails=("grace@navy.example",),
            primary_first=False, first_name="Grace", last_name="Hopper", created_at=_SAMPLE_START_MS + day,
        ),
        make_clerk_user(
            seed="sample:alan", email="alan.turing@example.com", username="alan", first_name="Alan",
            last_name="Turing", created_at=_SAMPLE_START_MS + 2 * day,
        ),
        make_clerk_user(
            seed="sample:margaret", email="margaret@example.com", first_name="Margaret",
            last_name="Hamilton", banned=True, created_at=_SAMPLE_START_MS + 3 * day,
        ),
    ]


_BROWSER_UA = (
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0 Safari/537.36"
)


def make_webhook_event(
    event_type: str,
    data: Mapping[str, Any],
    timestamp_ms: int | None = None,
    *,
    instance_id: str = DEFAULT_INSTANCE_ID,
    client_ip: str = "203.0.113.7",
    user_agent: str = _BROWSER_UA,
) -> dict[str, Any]:
    """Wrap ``data`` in Clerk's webhook envelope (``timestamp`` in ms, default now)."""
    return {
        "data": dict(data),
        "event_attributes": {"http_request": {"client_ip": client_ip, "user_agent": user_agent}},
        "instance_id": instance_id,
        "object": "event",
        "timestamp": timestamp_ms if timestamp_ms is not None else int(time.time() * 1000),
        "type": event_type,
    }


def make_deleted_data(user_id: str) -> dict[str, Any]:
    """The ``data`` of a ``user.deleted`` event (no email, no ``updated_at``)."""
    return {"deleted": True, "id": user_id, "object": "user"}


def clerk_error_body(code: str, message: str, long_message: str | None = None, **meta: Any) -> dict[str, Any]:
    """Clerk's error body: ``{"errors": [{message, long_message, code[, meta]}], "clerk_trace_id"}``."""
    err: dict[str, Any] = {"message": message, "long_message": long_message or message, "code": code}
    if meta:
        err["meta"] = meta
    return {"errors": [err], "clerk_trace_id": secrets.token_hex(16)}


def now_ms() -> int:
    return int(time.time() * 1000)


# ---------------------------------------------------------------------------
# Signing, exactly as Svix does it
# ---------------------------------------------------------------------------


def signed_headers(
    body: str, secret: str, *, msg_id: str | None = None, at: datetime | None = None
) -> dict[str, str]:
    """Svix headers for ``body`` (a str: svix signs bytes as the text "b'...'")."""
    msg_id = msg_id or f"msg_{uuid.uuid4().hex[:27]}"
    at = at or datetime.now(UTC)
    return {
        "svix-id": msg_id,
        "svix-timestamp": str(int(at.timestamp())),
        "svix-signature": Webhook(secret).sign(msg_id, at, body),
        "content-type": "application/json",
    }


def signed_delivery(event: Mapping[str, Any], secret: str, **kwargs: Any) -> tuple[str, dict[str, str]]:
    body = json.dumps(event)
    return body, signed_headers(body, secret, **kwargs)
