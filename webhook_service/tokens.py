"""Clerk session-token verification for the sync route.

The SDK's ``authenticate_request`` does the cryptography. Around it we close the
gaps the facts sheet lists: native-app tokens carry no ``azp`` (see ``_check_azp``),
only the Authorization header is read (a cookie would
let a browser on another site spend the user's session), only session tokens are
accepted (other shapes make the SDK call Clerk's API), ``exp`` and ``sub`` are
required, and without ``CLERK_JWT_KEY`` the JWKS fetch is ours, with a timeout.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

import httpx
from clerk_backend_api.security import authenticate_request
from clerk_backend_api.security.types import AuthenticateRequestOptions
from cryptography.hazmat.primitives import serialization
from jwt import PyJWK, get_unverified_header
from jwt.exceptions import PyJWTError

MAX_TOKEN_BYTES = 8192
JWKS_TTL_S = 300.0
JWKS_MIN_REFRESH_S = 30.0


class TokenError(Exception):
    """The request does not carry a valid Clerk session token. Safe to show the caller."""


class VerifierUnavailable(Exception):
    """The keys needed to check a token could not be had; the caller should retry."""


@dataclass(frozen=True)
class _HeadersOnly:
    """The minimal request shape ``authenticate_request`` reads."""

    headers: dict[str, str]


class SessionTokenVerifier:
    def __init__(
        self,
        *,
        jwt_key: str | None,
        authorized_parties: tuple[str, ...] = (),
        require_azp: bool = False,
        jwks: JwksCache | None = None,
    ) -> None:
        self._jwt_key = jwt_key
        self._parties = frozenset(authorized_parties)
        self._require_azp = require_azp
        self._jwks = jwks

    def verify(self, authorization: str | None) -> str:
        """Return the Clerk user id (``sub``) of a valid ``Bearer`` session token."""
        token = _bearer_token(authorization)
        key = self._jwt_key or self._remote_key(token)
        options = AuthenticateRequestOptions(
            jwt_key=key, authorized_parties=None, accepts_token=["session_token"]
        )
        try:
            state = authenticate_request(_HeadersOnly({"Authorization": f"Bearer {token}"}), options)
        except Exception as exc:  # the SDK lets some PyJWT and key errors escape
            raise TokenError("invalid session token") from exc
        if not state.is_signed_in:
            reason = getattr(state.reason, "name", None) or "invalid"
            raise TokenError(f"session token rejected: {reason.lower()}")
        payload = state.payload or {}
        self._check_azp(payload)
        return _checked_subject(payload)

    def _check_azp(self, payload: dict[str, Any]) -> None:
        """``azp`` is the Origin of the request that minted the token. A browser always
        sends Origin, so a token without ``azp`` comes from a native app (Expo), which
        sends none: it is accepted unless ``CLERK_REQUIRE_AZP`` says the deployment is
        web-only. An ``azp`` that is present must be on the list. (The SDK would reject
        a missing ``azp`` outright, so the check is made here.)"""
        if "azp" not in payload:
            if self._require_azp:
                raise TokenError("session token rejected: token has no azp claim (CLERK_REQUIRE_AZP)")
            return
        azp = payload["azp"]
        if self._parties and not (isinstance(azp, str) and azp in self._parties):
            raise TokenError("session token rejected: token_invalid_authorized_parties")

    def _remote_key(self, token: str) -> str:
        if self._jwks is None:
            raise VerifierUnavailable("session token verification is not configured")
        try:
            kid = get_unverified_header(token).get("kid")
        except PyJWTError as exc:
            raise TokenError("invalid session token") from exc
        return self._jwks.pem_for(kid)


def _bearer_token(authorization: str | None) -> str:
    if not authorization:
        raise TokenError("missing Authorization: Bearer header")
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise TokenError("Authorization header must be 'Bearer <session token>'")
    if len(token) > MAX_TOKEN_BYTES:
        raise TokenError("session token too large")
    # A JWT has no whitespace. Refusing it here also keeps the SDK, which strips every
    # "Bearer " it finds, from verifying a different string than the one we extracted.
    if len(token.split()) != 1:
        raise TokenError("Authorization header must be 'Bearer <session token>'")
    return token


def _checked_subject(payload: dict[str, Any]) -> str:
    exp = payload.get("exp")
    if not isinstance(exp, (int, float)) or isinstance(exp, bool):
        raise TokenError("session token has no exp claim")
    sub = payload.get("sub")
    if not isinstance(sub, str) or not sub:
        raise TokenError("session token has no sub claim")
    return sub


class JwksCache:
    """Clerk's JWKS, fetched with a hard timeout and kept for five minutes."""

    def __init__(self, api_url: str, secret_key: str, timeout_s: float = 3.0) -> None:
        self._url = api_url.rstrip("/") + "/v1/jwks"
        self._secret_key = secret_key
        self._timeout = timeout_s
        self._keys: dict[str | None, str] = {}
        self._fetched_at = float("-inf")
        self._lock = threading.Lock()

    def pem_for(self, kid: str | None) -> str:
        with self._lock:
            age = time.monotonic() - self._fetched_at
            if age > JWKS_TTL_S or (kid not in self._keys and age > JWKS_MIN_REFRESH_S):
                self._refresh()
            try:
                return self._keys[kid]
            except KeyError:
                raise TokenError("session token signed by an unknown key") from None

    def _refresh(self) -> None:
        try:
            response = httpx.get(
                self._url,
                headers={"Authorization": f"Bearer {self._secret_key}"},
                timeout=self._timeout,
            )
            response.raise_for_status()
            keys = response.json()["keys"]
        except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
            raise VerifierUnavailable("could not fetch Clerk's signing keys") from exc
        pems: dict[str | None, str] = {}
        for jwk in keys:
            try:
                public_key = PyJWK(jwk).key
                pem = public_key.public_bytes(
                    serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
                )
            except (PyJWTError, AttributeError, ValueError):
                continue
            pems[jwk.get("kid")] = pem.decode()
        self._keys = pems
        self._fetched_at = time.monotonic()
