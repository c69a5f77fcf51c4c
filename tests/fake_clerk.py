"""A local HTTP fake of Clerk's Backend API.

The payload builders live in ``webhook_service.sample_events`` (``send-test-event``
uses them too) and are re-exported here for the tests.

``FakeClerkAPI`` is a real threaded HTTP server on 127.0.0.1 serving
``/v1/users``, ``/v1/users/count``, ``/v1/users/{id}`` and ``/v1/jwks`` with
bearer-key auth, Clerk-shaped error bodies and fault injection (queued
failures, delays, a "down" switch).  Point the SDK at ``fake.url + "/v1"``.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Self

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
from werkzeug.serving import ThreadedWSGIServer, WSGIRequestHandler
from werkzeug.wrappers import Request, Response

from tests.lifecycle import Running
from webhook_service.sample_events import (
    AUTO,
    DEFAULT_INSTANCE_ID,
    DEFAULT_SECRET_KEY,
    clerk_error_body,
    clerk_id,
    make_clerk_user,
    make_deleted_data,
    make_users,
    make_webhook_event,
)

__all__ = [
    "AUTO",
    "DEFAULT_INSTANCE_ID",
    "DEFAULT_SECRET_KEY",
    "FakeClerkAPI",
    "RecordedRequest",
    "clerk_error_body",
    "clerk_id",
    "make_clerk_user",
    "make_deleted_data",
    "make_users",
    "make_webhook_event",
    "rsa_jwk",
]

# ---------------------------------------------------------------------------
# Fake server
# ---------------------------------------------------------------------------


class RecordedRequest(NamedTuple):
    """One received request.

    ``query`` keeps the first value per name; ``headers`` keys are lowercase;
    ``received_at`` is ``time.monotonic()`` when it arrived.
    """

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    received_at: float = 0.0


class _UserStore(dict[str, dict[str, Any]]):
    """A dict that bumps ``version`` on every add/replace/remove."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.version = 0

    def _bump(self) -> None:
        self.version += 1

    def __setitem__(self, k: str, v: dict[str, Any]) -> None:
        super().__setitem__(k, v)
        self._bump()

    def __delitem__(self, k: str) -> None:
        super().__delitem__(k)
        self._bump()

    def pop(self, *args: Any) -> Any:  # type: ignore[override]
        self._bump()
        return super().pop(*args)

    def popitem(self) -> tuple[str, dict[str, Any]]:
        self._bump()
        return super().popitem()

    def clear(self) -> None:
        super().clear()
        self._bump()

    def update(self, *args: Any, **kwargs: Any) -> None:
        super().update(*args, **kwargs)
        self._bump()

    def setdefault(self, k: str, default: Any = None) -> Any:  # type: ignore[override]
        self._bump()
        return super().setdefault(k, default)

    def __ior__(self, other: Any) -> Self:  # type: ignore[override,misc]
        self.update(other)
        return self


@dataclass
class _Fault:
    remaining: int
    status: int
    body: Any
    headers: dict[str, str]
    path_prefix: str | None


@dataclass
class _Delay:
    remaining: int
    seconds: float
    path_prefix: str | None


@dataclass
class _SortCache:
    version: int = -1
    by_field: dict[str, list[str]] = field(default_factory=dict)


class _QuietHandler(WSGIRequestHandler):
    """Request handler with keep-alive and no per-request access log."""

    protocol_version = "HTTP/1.1"

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        """Suppress werkzeug's access log."""


class _Server(ThreadedWSGIServer):
    """Threaded werkzeug server that can forcibly close open keep-alive sockets."""

    def __init__(self, host: str, port: int, app: Any) -> None:
        self.open_sockets: set[socket.socket] = set()
        self.sockets_lock = threading.Lock()
        super().__init__(host, port, app, handler=_QuietHandler)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self.sockets_lock:
            self.open_sockets.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self.sockets_lock:
            self.open_sockets.discard(request)
        super().shutdown_request(request)

    def close_open_sockets(self) -> None:
        with self.sockets_lock:
            sockets = list(self.open_sockets)
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


_SORTABLE_FIELDS = ("created_at", "updated_at", "last_sign_in_at", "last_active_at")
_DEFAULT_FAULT_TEXT = {
    429: ("too_many_requests", "Too Many Requests", "Too many requests, please try again later."),
    503: ("service_unavailable", "Service unavailable", "The service is temporarily unavailable."),
}


def _fault_body(status: int) -> dict[str, Any]:
    code, message, long_message = _DEFAULT_FAULT_TEXT.get(
        status,
        (
            "internal_clerk_error",
            "Oops, an unexpected error occurred",
            "There was an internal error on our servers. We've been notified and are working on fixing it.",
        )
        if status >= 500
        else ("request_failed", "Request failed", f"The request failed with status {status}."),
    )
    return clerk_error_body(code, message, long_message)


def _load_public_key(pem: str | bytes) -> RSAPublicKey:
    """Load an RSA public key from a public (or private) key PEM."""
    data = pem.encode() if isinstance(pem, str) else pem
    try:
        key: Any = serialization.load_pem_public_key(data)
    except ValueError:
        key = serialization.load_pem_private_key(data, password=None).public_key()
    if not isinstance(key, RSAPublicKey):
        raise TypeError("JWKS key must be an RSA key")
    return key


def rsa_jwk(pem: str | bytes, kid: str) -> dict[str, str]:
    """Return the public JWK (kty RSA, use sig, alg RS256, kid, n, e) for a PEM key."""
    jwk: dict[str, str] = jwt.algorithms.RSAAlgorithm.to_jwk(_load_public_key(pem), as_dict=True)
    return {"use": "sig", "kty": "RSA", "kid": kid, "alg": "RS256", "n": jwk["n"], "e": jwk["e"]}


class FakeClerkAPI(Running):
    """A threaded local HTTP fake of Clerk's Backend API (``/v1/...``).

    Use as ``with FakeClerkAPI() as fake:`` or ``fake.start()`` / ``fake.stop()``.
    ``fake.url`` has no ``/v1`` suffix.  ``fake.users`` maps id -> user dict;
    adding, replacing or removing entries is picked up automatically, but call
    :meth:`invalidate` after mutating a user's sort fields in place.
    """

    def __init__(
        self,
        *,
        secret_key: str = DEFAULT_SECRET_KEY,
        users: Iterable[dict[str, Any]] | Mapping[str, dict[str, Any]] | None = None,
        jwks_public_key_pem: str | bytes | None = None,
        jwks_kid: str = DEFAULT_INSTANCE_ID,
        max_offset: int | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.secret_key = secret_key
        self.jwks_public_key_pem = jwks_public_key_pem
        self.jwks_kid = jwks_kid
        self.max_offset = max_offset  # offsets past this answer 504, as Clerk's time out
        self.requests: list[RecordedRequest] = []
        self._host = host
        self._port = port
        self._lock = threading.Lock()
        self._users = _UserStore()
        self._cache = _SortCache()
        self._faults: list[_Fault] = []
        self._delays: list[_Delay] = []
        self._down = False
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        if users is not None:
            self.users = users

    # -- lifecycle ---------------------------------------------------------

    def start(self) -> Self:
        """Bind a free port on ``host`` and serve in a daemon thread."""
        if self._server is not None:
            return self
        self._stopping.clear()
        self._server = _Server(self._host, self._port, self._wsgi)
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.02},
            name="FakeClerkAPI",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, wake delayed handlers and drop keep-alive connections."""
        server, self._server = self._server, None
        if server is None:
            return
        self._stopping.set()
        server.shutdown()
        server.server_close()
        server.close_open_sockets()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    @property
    def port(self) -> int:
        """The bound port (only while running)."""
        if self._server is None:
            raise RuntimeError("FakeClerkAPI is not running")
        return int(self._server.server_port)

    @property
    def url(self) -> str:
        """Base URL without ``/v1``, e.g. ``http://127.0.0.1:54321``."""
        return f"http://{self._host}:{self.port}"

    # -- users ---------------------------------------------------------------

    @property
    def users(self) -> dict[str, dict[str, Any]]:
        """Live mapping user id -> user dict."""
        return self._users

    @users.setter
    def users(self, value: Iterable[dict[str, Any]] | Mapping[str, dict[str, Any]]) -> None:
        items = value.items() if isinstance(value, Mapping) else ((u["id"], u) for u in value)
        with self._lock:
            self._users = _UserStore(items)
            self._cache = _SortCache()

    def add_user(self, user: dict[str, Any]) -> dict[str, Any]:
        """Add or replace one user; returns it."""
        self._users[user["id"]] = user
        return user

    def add_users(self, users: Iterable[dict[str, Any]]) -> None:
        """Add or replace many users at once."""
        self._users.update((u["id"], u) for u in users)

    def remove_user(self, user_id: str) -> dict[str, Any] | None:
        """Remove a user; returns it, or None if absent."""
        user: dict[str, Any] | None = self._users.pop(user_id, None)
        return user

    def invalidate(self) -> None:
        """Drop the sorted-id cache (after mutating sort fields in place)."""
        with self._lock:
            self._cache = _SortCache()

    # -- fault injection -----------------------------------------------------

    def fail_next(
        self,
        n: int = 1,
        status: int = 500,
        body: Any = None,
        headers: Mapping[str, str] | None = None,
        *,
        retry_after: float | None = None,
        path_prefix: str | None = None,
    ) -> None:
        """Answer the next ``n`` requests (matching ``path_prefix``, e.g. ``/v1/users``) with ``status``.

        ``body`` defaults to a Clerk error body; dicts/lists are sent as JSON,
        str/bytes verbatim as text/plain.  A 429 carries ``Retry-After: 1``
        unless ``retry_after`` (seconds) says otherwise (``0`` is allowed).
        """
        if n <= 0:
            return
        hdrs = dict(headers or {})
        if retry_after is None and status == 429:
            retry_after = 1
        if retry_after is not None:
            hdrs.setdefault("Retry-After", f"{retry_after:g}")
        with self._lock:
            self._faults.append(_Fault(n, status, body, hdrs, path_prefix))

    def delay_next(self, n: int, seconds: float, *, path_prefix: str | None = None) -> None:
        """Make the next ``n`` matching responses sleep ``seconds`` first."""
        if n <= 0:
            return
        with self._lock:
            self._delays.append(_Delay(n, seconds, path_prefix))

    def set_down(self, down: bool = True) -> None:
        """While down, every request gets a 503 Clerk error."""
        with self._lock:
            self._down = down

    def reset_faults(self) -> None:
        """Clear queued failures and delays and bring the fake back up."""
        with self._lock:
            self._faults.clear()
            self._delays.clear()
            self._down = False

    def clear_requests(self) -> None:
        """Forget recorded requests."""
        with self._lock:
            self.requests.clear()

    def request_count(self, path_prefix: str = "") -> int:
        """Number of recorded requests whose path starts with ``path_prefix``."""
        with self._lock:
            return sum(1 for r in self.requests if r.path.startswith(path_prefix))

    # -- HTTP ------------------------------------------------------------------

    def _wsgi(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        response = self._handle(Request(environ))
        result: Iterable[bytes] = response(environ, start_response)
        return result

    def _handle(self, req: Request) -> Response:
        path = req.path
        if req.method not in ("GET", "HEAD"):
            req.get_data()  # drain the body so the keep-alive connection stays usable
        with self._lock:
            self.requests.append(
                RecordedRequest(
                    req.method,
                    path,
                    req.args.to_dict(flat=True),
                    {k.lower(): v for k, v in req.headers.items()},
                    time.monotonic(),
                )
            )
            delay = _take(self._delays, path)
            down = self._down
        if delay is not None:
            self._stopping.wait(delay.seconds)
        if down:
            return self._json(503, _fault_body(503))
        with self._lock:
            fault = _take(self._faults, path)
        if fault is not None:
            return self._fault_response(fault)
        if req.headers.get("Authorization", "") != f"Bearer {self.secret_key}":
            return self._json(
                401,
                clerk_error_body(
                    "authentication_invalid",
                    "Invalid authentication",
                    "Unable to authenticate the request, you need to supply an active API key",
                ),
            )
        if req.method not in ("GET", "HEAD"):
            return self._json(405, clerk_error_body("method_not_allowed", "Method not allowed"))
        route = path.rstrip("/")
        if route == "/v1/jwks":
            return self._json(200, self._jwks())
        if route == "/v1/users":
            return self._list_users(req)
        if route == "/v1/users/count":
            return self._count_users(req)
        if route.startswith("/v1/users/") and route.count("/") == 3:
            user = self._users.get(route.rsplit("/", 1)[1])
            if user is not None:
                return self._json(200, user)
        return self._json(
            404, clerk_error_body("resource_not_found", "not found", "The requested resource was not found")
        )

    @staticmethod
    def _json(status: int, payload: Any, headers: Mapping[str, str] | None = None) -> Response:
        body = json.dumps(payload, separators=(",", ":"))
        return Response(body, status=status, headers=dict(headers or {}), mimetype="application/json")

    def _fault_response(self, fault: _Fault) -> Response:
        body = fault.body if fault.body is not None else _fault_body(fault.status)
        if isinstance(body, (str, bytes)):
            return Response(body, status=fault.status, headers=fault.headers, mimetype="text/plain")
        return self._json(fault.status, body, fault.headers)

    def _jwks(self) -> dict[str, Any]:
        pem = self.jwks_public_key_pem
        return {"keys": [rsa_jwk(pem, self.jwks_kid)] if pem else []}

    def _sorted_ids(self, sort_field: str) -> list[str]:
        """Ids ascending by (field, id); cached until the user store changes."""
        with self._lock:
            store = self._users
            if self._cache.version != store.version:
                self._cache = _SortCache(version=store.version)
            ids = self._cache.by_field.get(sort_field)
            if ids is None:
                snapshot = list(store.values())
                snapshot.sort(key=lambda u: (u.get(sort_field) or 0, u["id"]))
                ids = [u["id"] for u in snapshot]
                self._cache.by_field[sort_field] = ids
            return ids

    def _filtered_ids(self, req: Request, sort_field: str) -> list[str]:
        """Sorted ids narrowed by the user_id, email_address, external_id and username filters."""
        ids = self._sorted_ids(sort_field)
        user_ids = set(req.args.getlist("user_id"))
        emails = {e.lower() for e in req.args.getlist("email_address")}
        external_ids = set(req.args.getlist("external_id"))
        usernames = set(req.args.getlist("username"))
        if not (user_ids or emails or external_ids or usernames):
            return ids
        users = self._users

        def keep(user: dict[str, Any] | None) -> bool:
            if user is None:
                return False
            if user_ids and user["id"] not in user_ids:
                return False
            if external_ids and user.get("external_id") not in external_ids:
                return False
            if usernames and user.get("username") not in usernames:
                return False
            addrs = {e["email_address"].lower() for e in user.get("email_addresses", ())}
            return not emails or bool(addrs & emails)

        return [i for i in ids if keep(users.get(i))]

    def _list_users(self, req: Request) -> Response:
        limit = _int_arg(req, "limit", 10)
        if limit is None or not 1 <= limit <= 500:
            return self._invalid("limit", "limit must be an integer between 1 and 500")
        offset = _int_arg(req, "offset", 0)
        if offset is None or offset < 0:
            return self._invalid("offset", "offset must be an integer greater than or equal to 0")
        # "+created_at" arrives as " created_at" when the client does not percent-encode "+".
        order_by = req.args.get("order_by", "-created_at").strip()
        descending = order_by.startswith("-")
        sort_field = order_by.lstrip("+-")
        if sort_field not in _SORTABLE_FIELDS:
            return self._invalid("order_by", f"order_by must be one of {', '.join(_SORTABLE_FIELDS)}")
        ids = self._filtered_ids(req, sort_field)
        total = len(ids)
        if self.max_offset is not None and offset > self.max_offset:
            return self._json(504, _fault_body(504))  # Clerk: large offsets eventually time out
        cursor = req.args.get("starting_after")
        if cursor is not None:
            if offset:
                return self._invalid("starting_after", "starting_after cannot be combined with offset")
            if sort_field != "created_at":
                return self._invalid("order_by", "starting_after requires ordering by created_at")
            ordered = ids[::-1] if descending else ids
            try:
                start = ordered.index(cursor) + 1
            except ValueError:
                return self._invalid("starting_after", "starting_after must be the id of a listed user")
            page_ids = ordered[start : start + limit]
        elif descending:
            end = max(total - offset, 0)
            page_ids = ids[max(end - limit, 0) : end][::-1]
        else:
            page_ids = ids[offset : offset + limit]
        users = self._users
        page = [u for u in (users.get(i) for i in page_ids) if u is not None]
        return self._json(200, page)

    def _count_users(self, req: Request) -> Response:
        return self._json(
            200, {"object": "total_count", "total_count": len(self._filtered_ids(req, "created_at"))}
        )

    def _invalid(self, param: str, long_message: str) -> Response:
        return self._json(
            422, clerk_error_body("form_param_value_invalid", "is invalid", long_message, param_name=param)
        )


def _take(queue: list[Any], path: str) -> Any:
    """Pop one use of the first entry in ``queue`` whose prefix matches ``path`` (caller holds the lock)."""
    for i, entry in enumerate(queue):
        if entry.path_prefix is None or path.startswith(entry.path_prefix):
            entry.remaining -= 1
            if entry.remaining <= 0:
                del queue[i]
            return entry
    return None


def _int_arg(req: Request, name: str, default: int) -> int | None:
    """Integer query parameter, ``default`` when absent, None when malformed."""
    raw = req.args.get(name)
    if raw is None:
        return default
    try:
        return int(raw)
    except ValueError:
        return None
