"""A local stand-in for Clerk's Backend API, as stripe-mock is for Stripe.

``make run`` starts one when ``CLERK_SECRET_KEY`` is unset, so sync and reconcile work
with no Clerk account; the tests run the same server (``tests/support/fake_clerk.py`` adds fault
injection). It serves what the service uses, with the Backend API's shapes:

- ``GET /v1/users``: a JSON array; ``limit`` (1-500), ``offset``, ``order_by``
  (``±created_at``, ``±updated_at``, ...), the ``starting_after`` cursor (422 on a bad
  combination, naming the parameter), and the ``user_id``, ``email_address``,
  ``external_id`` and ``username`` filters;
- ``GET /v1/users/count``, ``GET /v1/users/{id}`` (404 in Clerk's error shape);
- the organization paths (``local_organizations.py``): ``/v1/organizations``,
  ``/v1/organizations/{id}`` and its ``/memberships``, ``/v1/organization_memberships`` and
  ``/v1/users/{id}/organization_memberships``, each ``{"data": [...], "total_count": N}``;
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
from typing import Any, Self

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey, RSAPublicKey
from werkzeug.serving import ThreadedWSGIServer, WSGIRequestHandler
from werkzeug.wrappers import Request, Response

from .clerk_http import invalid, json_response, not_found
from .local_organizations import OrganizationDirectory
from .local_users import UserDirectory
from .sample_events import DEFAULT_INSTANCE_ID, clerk_error_body, clerk_id

LOCAL_SECRET_PREFIX = "sk_test_local_"
TOKEN_PATH = "/local/session_tokens"
USERS_PATH = "/local/users/"  # + id: PATCH changes a user, DELETE deletes one, with no webhook
CHANGEABLE = ("first_name", "last_name", "username", "image_url", "public_metadata", "unsafe_metadata")
SESSION_TOKEN_LIFETIME_S = 60  # as Clerk's


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
        organizations: Iterable[dict[str, Any]] = (),
        memberships: Iterable[dict[str, Any]] = (),
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
        self.directory = UserDirectory()
        self.orgs = OrganizationDirectory()
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        if users is not None:
            self.users = users
        for organization in organizations:
            self.orgs.add_organization(organization)
        for membership in memberships:
            self.orgs.add_membership(membership)

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

    # -- users, organizations and tokens ---------------------------------------------

    @property
    def users(self) -> dict[str, dict[str, Any]]:
        """Live mapping user id -> user."""
        return self.directory.users

    @users.setter
    def users(self, value: Iterable[dict[str, Any]] | Mapping[str, dict[str, Any]]) -> None:
        self.directory.replace(value)

    def add_user(self, user: dict[str, Any]) -> dict[str, Any]:
        """Add or replace one user; returns it."""
        self.directory.users[user["id"]] = user
        return user

    def add_users(self, users: Iterable[dict[str, Any]]) -> None:
        self.directory.users.update((u["id"], u) for u in users)

    def remove_user(self, user_id: str) -> dict[str, Any] | None:
        """Delete a user, and (as Clerk does) its memberships."""
        self.orgs.remove_user(user_id)
        user: dict[str, Any] | None = self.directory.users.pop(user_id, None)
        return user

    def invalidate(self) -> None:
        """Forget the sort order (after changing a user's sort fields in place)."""
        self.directory.invalidate()

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
        if route.startswith(USERS_PATH) and req.method in ("PATCH", "DELETE"):
            return self._change_user(req, route.removeprefix(USERS_PATH))
        if req.method not in ("GET", "HEAD"):
            return json_response(405, clerk_error_body("method_not_allowed", "Method not allowed"))
        if route == "/v1/jwks":
            pem = self.jwks_public_key_pem
            return json_response(200, {"keys": [rsa_jwk(pem, self.jwks_kid)] if pem else []})
        if route == "/v1/users":
            return self.list_users(req)
        if route == "/v1/users/count":
            return self.directory.count(req)
        if route.startswith("/v1/users/") and route.count("/") == 3:
            user = self.directory.users.get(route.rsplit("/", 1)[1])
            if user is not None:
                return json_response(200, user)
        answer = self.orgs.answer(req, route) if route.startswith("/v1/") else None
        return answer if answer is not None else not_found()

    def list_users(self, req: Request) -> Response:
        return self.directory.list_page(req)

    def _issue_token(self, req: Request) -> Response:
        try:
            user_id = json.loads(req.get_data() or b"{}").get("user_id")
        except (ValueError, AttributeError):
            user_id = None
        if not isinstance(user_id, str):
            return invalid("user_id", "user_id must be given")
        if user_id not in self.directory.users:
            return not_found()
        return json_response(200, {"object": "token", "jwt": self.session_token(user_id)})

    def _change_user(self, req: Request, user_id: str) -> Response:
        """Change or delete a user as Clerk's dashboard would, but send no webhook: what the
        service then learns, it learns from its watcher (or a sync, or reconcile)."""
        user = self.directory.users.get(user_id)
        if user is None:
            return not_found()
        if req.method == "DELETE":
            self.remove_user(user_id)
            return json_response(200, {"deleted": True, "id": user_id, "object": "user"})
        try:
            changes = json.loads(req.get_data() or b"{}")
        except ValueError:
            changes = None
        if not isinstance(changes, dict) or not set(changes) <= set(CHANGEABLE):
            return invalid("body", f"a JSON object of {', '.join(CHANGEABLE)}")
        changed = dict(user, **changes, updated_at=int(time.time() * 1000))
        self.add_user(changed)
        return json_response(200, changed)


def local_secret_key() -> str:
    """The local Clerk's secret key: a recognisable ``sk_test_local_`` value, never a real one."""
    return LOCAL_SECRET_PREFIX + "development"


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
