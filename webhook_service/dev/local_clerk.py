"""A local stand-in for Clerk's Backend API, as stripe-mock is for Stripe.

``make run`` starts one when ``CLERK_SECRET_KEY`` is unset, so sync and reconcile work
with no Clerk account; the tests run the same server (``tests/support/fake_clerk.py`` adds fault
injection). It serves what the service uses, with the Backend API's shapes:

- ``GET /v1/users``: a JSON array; ``limit`` (1-500), ``offset``, ``order_by``
  (``±created_at``, ``±updated_at``, ...), the ``starting_after`` cursor (422 on a bad
  combination, naming the parameter), and the ``user_id``, ``email_address``,
  ``external_id`` and ``username`` filters;
- ``GET /v1/users/count``, ``GET /v1/users/{id}`` (404 in Clerk's error shape);
- ``GET /v1/jwks``, the public half of its own signing key.

Every request must carry ``Authorization: Bearer <secret key>``. One route is its own:
``POST /local/session_tokens`` with ``{"user_id": ...}`` returns a session token for that
user, signed with its key (``flask --app wsgi dev-token``). Real Clerk has no such route.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Self

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey, RSAPublicKey
from werkzeug.serving import ThreadedWSGIServer, WSGIRequestHandler
from werkzeug.wrappers import Request, Response

from .sample_events import DEFAULT_INSTANCE_ID, clerk_error_body, clerk_id

LOCAL_SECRET_PREFIX = "sk_test_local_"
TOKEN_PATH = "/local/session_tokens"
SESSION_TOKEN_LIFETIME_S = 60  # as Clerk's
SORTABLE_FIELDS = ("created_at", "updated_at", "last_sign_in_at", "last_active_at")


def generate_signing_key() -> str:
    """A new RSA private key, PEM (PKCS#8), standing in for an instance's signing key."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


def public_pem_of(pem: str | bytes) -> str:
    """The public key PEM of a public or private RSA key PEM (what ``CLERK_JWT_KEY`` holds)."""
    return (
        _public_key(pem)
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def rsa_jwk(pem: str | bytes, kid: str) -> dict[str, str]:
    """The public JWK (kty RSA, use sig, alg RS256, kid, n, e) of a PEM key, as Clerk's JWKS has."""
    jwk: dict[str, str] = jwt.algorithms.RSAAlgorithm.to_jwk(_public_key(pem), as_dict=True)
    return {"use": "sig", "kty": "RSA", "kid": kid, "alg": "RS256", "n": jwk["n"], "e": jwk["e"]}


class LocalClerk:
    """A threaded HTTP server on loopback answering like Clerk's Backend API.

    ``with LocalClerk(users=...) as clerk:``; ``clerk.url`` has no ``/v1``. ``users`` maps
    id -> user and may be changed while serving.
    """

    def __init__(
        self,
        *,
        secret_key: str | None = None,
        users: Iterable[dict[str, Any]] | Mapping[str, dict[str, Any]] | None = None,
        signing_key_pem: str | None = None,
        jwks_public_key_pem: str | bytes | None = None,
        jwks_kid: str = DEFAULT_INSTANCE_ID,
        issuer: str = "https://clerk.local.dev",
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.secret_key = secret_key or local_secret_key()
        self.signing_key_pem = signing_key_pem
        if jwks_public_key_pem is None and signing_key_pem is not None:
            jwks_public_key_pem = public_pem_of(signing_key_pem)
        self.jwks_public_key_pem = jwks_public_key_pem
        self.jwks_kid = jwks_kid
        self.issuer = issuer
        self._host = host
        self._port = port
        self._lock = threading.Lock()
        self._users = _Users()
        self._sorted = _SortCache()
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        if users is not None:
            self.users = users

    # -- lifecycle ---------------------------------------------------------------

    def start(self) -> Self:
        """Bind the port (a free one unless given) and serve in a daemon thread."""
        if self._server is not None:
            return self
        self._stopping.clear()
        self._server = _Server(self._host, self._port, self._wsgi)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, name="LocalClerk", daemon=True
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

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("LocalClerk is not running")
        return int(self._server.server_port)

    @property
    def url(self) -> str:
        """Base URL without ``/v1``, e.g. ``http://127.0.0.1:54321`` (``CLERK_API_URL``)."""
        return f"http://{self._host}:{self.port}"

    # -- users and tokens ----------------------------------------------------------

    @property
    def users(self) -> dict[str, dict[str, Any]]:
        """Live mapping user id -> user."""
        return self._users

    @users.setter
    def users(self, value: Iterable[dict[str, Any]] | Mapping[str, dict[str, Any]]) -> None:
        items = value.items() if isinstance(value, Mapping) else ((u["id"], u) for u in value)
        with self._lock:
            self._users = _Users(items)
            self._sorted = _SortCache()

    def add_user(self, user: dict[str, Any]) -> dict[str, Any]:
        """Add or replace one user; returns it."""
        self._users[user["id"]] = user
        return user

    def add_users(self, users: Iterable[dict[str, Any]]) -> None:
        self._users.update((u["id"], u) for u in users)

    def remove_user(self, user_id: str) -> dict[str, Any] | None:
        user: dict[str, Any] | None = self._users.pop(user_id, None)
        return user

    def invalidate(self) -> None:
        """Forget the sort order (after changing a user's sort fields in place)."""
        with self._lock:
            self._sorted = _SortCache()

    def session_token(self, user_id: str, *, lifetime_s: int = SESSION_TOKEN_LIFETIME_S) -> str:
        """A session token for ``user_id`` with the claims Clerk's have, minus ``azp`` (as
        a native app's), signed with this instance's key."""
        if self.signing_key_pem is None:
            raise RuntimeError("this LocalClerk has no signing key")
        now = int(time.time())
        claims = {
            "exp": now + lifetime_s,
            "iat": now,
            "iss": self.issuer,
            "nbf": now - 10,
            "sid": clerk_id("sess", f"{user_id}:{now}"),
            "sub": user_id,
        }
        return jwt.encode(claims, self.signing_key_pem, algorithm="RS256", headers={"kid": self.jwks_kid})

    # -- HTTP ----------------------------------------------------------------------

    def _wsgi(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        response = self.handle(Request(environ))
        result: Iterable[bytes] = response(environ, start_response)
        return result

    def handle(self, req: Request) -> Response:
        """Answer one request as Clerk would (a subclass may answer first)."""
        if req.method not in ("GET", "HEAD"):
            req.get_data()  # drain the body so the keep-alive connection stays usable
        if req.headers.get("Authorization", "") != f"Bearer {self.secret_key}":
            return json_response(
                401,
                clerk_error_body(
                    "authentication_invalid",
                    "Invalid authentication",
                    "Unable to authenticate the request, you need to supply an active API key",
                ),
            )
        route = req.path.rstrip("/")
        if route == TOKEN_PATH and req.method == "POST":
            return self._issue_token(req)
        if req.method not in ("GET", "HEAD"):
            return json_response(405, clerk_error_body("method_not_allowed", "Method not allowed"))
        if route == "/v1/jwks":
            pem = self.jwks_public_key_pem
            return json_response(200, {"keys": [rsa_jwk(pem, self.jwks_kid)] if pem else []})
        if route == "/v1/users":
            return self.list_users(req)
        if route == "/v1/users/count":
            total = len(self._filtered_ids(req, "created_at"))
            return json_response(200, {"object": "total_count", "total_count": total})
        if route.startswith("/v1/users/") and route.count("/") == 3:
            user = self._users.get(route.rsplit("/", 1)[1])
            if user is not None:
                return json_response(200, user)
        return _not_found()

    def list_users(self, req: Request) -> Response:
        limit = _int_arg(req, "limit", 10)
        if limit is None or not 1 <= limit <= 500:
            return invalid("limit", "limit must be an integer between 1 and 500")
        offset = _int_arg(req, "offset", 0)
        if offset is None or offset < 0:
            return invalid("offset", "offset must be an integer greater than or equal to 0")
        # "+created_at" arrives as " created_at" when the client does not percent-encode "+".
        order_by = req.args.get("order_by", "-created_at").strip()
        descending = order_by.startswith("-")
        sort_field = order_by.lstrip("+-")
        if sort_field not in SORTABLE_FIELDS:
            return invalid("order_by", f"order_by must be one of {', '.join(SORTABLE_FIELDS)}")
        ids = self._filtered_ids(req, sort_field)
        cursor = req.args.get("starting_after")
        if cursor is not None:
            if offset:
                return invalid("starting_after", "starting_after cannot be combined with offset")
            if sort_field != "created_at":
                return invalid("order_by", "starting_after requires ordering by created_at")
            ordered = ids[::-1] if descending else ids
            try:
                start = ordered.index(cursor) + 1
            except ValueError:
                return invalid("starting_after", "starting_after must be the id of a listed user")
            page_ids = ordered[start : start + limit]
        elif descending:
            end = max(len(ids) - offset, 0)
            page_ids = ids[max(end - limit, 0) : end][::-1]
        else:
            page_ids = ids[offset : offset + limit]
        users = self._users
        return json_response(200, [u for u in (users.get(i) for i in page_ids) if u is not None])

    def _issue_token(self, req: Request) -> Response:
        try:
            user_id = json.loads(req.get_data() or b"{}").get("user_id")
        except (ValueError, AttributeError):
            user_id = None
        if not isinstance(user_id, str):
            return invalid("user_id", "user_id must be given")
        if user_id not in self._users:
            return _not_found()
        return json_response(200, {"object": "token", "jwt": self.session_token(user_id)})

    def _sorted_ids(self, sort_field: str) -> list[str]:
        """Ids ascending by (field, id); cached until the users change."""
        with self._lock:
            users = self._users
            if self._sorted.version != users.version:
                self._sorted = _SortCache(version=users.version)
            ids = self._sorted.by_field.get(sort_field)
            if ids is None:
                snapshot = sorted(users.values(), key=lambda u: (u.get(sort_field) or 0, u["id"]))
                ids = self._sorted.by_field[sort_field] = [u["id"] for u in snapshot]
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


def local_secret_key() -> str:
    """The local Clerk's secret key: a recognisable ``sk_test_local_`` value, never a real one."""
    return LOCAL_SECRET_PREFIX + "development"


def json_response(status: int, payload: Any, headers: Mapping[str, str] | None = None) -> Response:
    body = json.dumps(payload, separators=(",", ":"))
    return Response(body, status=status, headers=dict(headers or {}), mimetype="application/json")


def invalid(param: str, long_message: str) -> Response:
    """Clerk's 422, naming the parameter it refused."""
    body = clerk_error_body("form_param_value_invalid", "is invalid", long_message, param_name=param)
    return json_response(422, body)


def _not_found() -> Response:
    body = clerk_error_body("resource_not_found", "not found", "The requested resource was not found")
    return json_response(404, body)


def _public_key(pem: str | bytes) -> RSAPublicKey:
    data = pem.encode() if isinstance(pem, str) else pem
    try:
        key: Any = serialization.load_pem_public_key(data)
    except ValueError:
        private: Any = serialization.load_pem_private_key(data, password=None)
        if not isinstance(private, RSAPrivateKey):
            raise TypeError("the signing key must be an RSA key") from None
        key = private.public_key()
    if not isinstance(key, RSAPublicKey):
        raise TypeError("the signing key must be an RSA key")
    return key


def _int_arg(req: Request, name: str, default: int) -> int | None:
    """An integer query parameter: ``default`` when absent, None when malformed."""
    raw = req.args.get(name)
    if raw is None:
        return default
    try:
        return int(raw)
    except ValueError:
        return None


class _Users(dict[str, dict[str, Any]]):
    """A dict whose ``version`` changes on every add, replace or remove (for the sort cache)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.version = 0

    def __setitem__(self, k: str, v: dict[str, Any]) -> None:
        super().__setitem__(k, v)
        self.version += 1

    def __delitem__(self, k: str) -> None:
        super().__delitem__(k)
        self.version += 1

    def pop(self, *args: Any) -> Any:
        self.version += 1
        return super().pop(*args)

    def popitem(self) -> tuple[str, dict[str, Any]]:
        self.version += 1
        return super().popitem()

    def clear(self) -> None:
        super().clear()
        self.version += 1

    def update(self, *args: Any, **kwargs: Any) -> None:
        super().update(*args, **kwargs)
        self.version += 1

    def setdefault(self, k: str, default: Any = None) -> Any:
        self.version += 1
        return super().setdefault(k, default)

    def __ior__(self, other: Any) -> Self:  # type: ignore[override,misc]
        self.update(other)
        return self


@dataclass
class _SortCache:
    version: int = -1
    by_field: dict[str, list[str]] = field(default_factory=dict)


class _QuietHandler(WSGIRequestHandler):
    """Keep-alive, and no access log line per request."""

    protocol_version = "HTTP/1.1"

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        pass


class _Server(ThreadedWSGIServer):
    """A threaded werkzeug server that can close its open keep-alive sockets on stop."""

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
