"""Mint Clerk-like session tokens (JWTs) inside the tests.

Clerk signs session tokens with RS256 using the instance's private key; the service
checks them against the public PEM (``CLERK_JWT_KEY``) or Clerk's JWKS. Here a fresh
RSA key pair stands in for the instance key, and :func:`mint_token` builds tokens with
the claims Clerk puts in them (``sub``, ``sid``, ``iat``, ``nbf``, ``exp``, ``azp``,
``iss``), with switches to omit or alter any claim, add a ``kid`` header, or sign with
something other than RS256 (including the hostile ``none`` and HS256-with-the-public-key
forms, which PyJWT itself refuses to produce).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import cache
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

DEFAULT_AZP = "https://app.xclone.dev"
DEFAULT_ISS = "https://clerk.xclone.dev"
DEFAULT_SUB = "user_2pWx4Yqk7TzL0mN3bV8cR1sD5fG"
DEFAULT_SID = "sess_2pWx5Aa9BcDeFgHiJkLmNoPqRsT"
DEFAULT_LIFETIME_S = 60  # Clerk's session tokens live for 60 seconds
NBF_BACKDATE_S = 10  # Clerk backdates nbf a few seconds to absorb clock skew


@dataclass(frozen=True)
class KeyPair:
    """An RSA key pair standing in for a Clerk instance's signing key."""

    private_key: rsa.RSAPrivateKey
    private_pem: str
    public_pem: str

    @classmethod
    def generate(cls, key_size: int = 2048) -> KeyPair:
        private_key = rsa.generate_private_key(public_exponent=65537, key_size=key_size)
        private_pem = private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode()
        public_pem = (
            private_key.public_key()
            .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
            .decode()
        )
        return cls(private_key, private_pem, public_pem)


@cache
def instance_keys() -> KeyPair:
    """The key pair of "our" Clerk instance, generated once per test process."""
    return KeyPair.generate()


@cache
def other_keys() -> KeyPair:
    """A second, unrelated key pair: tokens signed with it must be rejected."""
    return KeyPair.generate()


def session_claims(
    *,
    sub: str = DEFAULT_SUB,
    sid: str = DEFAULT_SID,
    azp: str = DEFAULT_AZP,
    iss: str = DEFAULT_ISS,
    now: float | None = None,
    lifetime_s: float = DEFAULT_LIFETIME_S,
    omit: Iterable[str] = (),
    **overrides: Any,
) -> dict[str, Any]:
    """The claims of a Clerk session token issued at ``now`` (default: the real clock).

    ``omit`` drops claims by name; ``overrides`` replace or add claims verbatim.
    """
    issued = int(time.time() if now is None else now)
    claims: dict[str, Any] = {
        "azp": azp,
        "exp": issued + int(lifetime_s),
        "iat": issued,
        "iss": iss,
        "nbf": issued - NBF_BACKDATE_S,
        "sid": sid,
        "sub": sub,
    }
    claims.update(overrides)
    for name in omit:
        claims.pop(name, None)
    return claims


def mint_token(
    keys: KeyPair | None = None,
    *,
    algorithm: str = "RS256",
    kid: str | None = None,
    headers: Mapping[str, Any] | None = None,
    claims: Mapping[str, Any] | None = None,
    **claim_options: Any,
) -> str:
    """A signed session token.

    ``keys`` defaults to :func:`instance_keys`. ``claims`` gives the full claim set;
    otherwise ``claim_options`` go to :func:`session_claims`. ``algorithm`` may be any
    asymmetric algorithm PyJWT supports for an RSA key (RS256, RS384, RS512, PS256...),
    ``"none"`` (unsigned), or ``"HS256"``, which signs with the *public* PEM as the HMAC
    secret - the classic algorithm-confusion attack.
    """
    keys = keys or instance_keys()
    payload = dict(claims) if claims is not None else session_claims(**claim_options)
    header: dict[str, Any] = dict(headers or {})
    if kid is not None:
        header["kid"] = kid
    if algorithm == "none":
        return unsigned_token(payload, header)
    if algorithm.upper().startswith("HS"):
        return hmac_token(payload, keys.public_pem, algorithm=algorithm, header=header)
    return jwt.encode(payload, keys.private_key, algorithm=algorithm, headers=header or None)


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _segment(obj: Mapping[str, Any]) -> str:
    return _b64url(json.dumps(obj, separators=(",", ":")).encode())


def unsigned_token(payload: Mapping[str, Any], header: Mapping[str, Any] | None = None) -> str:
    """A JWT with ``alg: none`` and an empty signature."""
    head = {"alg": "none", "typ": "JWT", **(header or {})}
    return f"{_segment(head)}.{_segment(payload)}."


_HMAC_HASHES = {"HS256": hashlib.sha256, "HS384": hashlib.sha384, "HS512": hashlib.sha512}


def hmac_token(
    payload: Mapping[str, Any],
    secret: str | bytes,
    *,
    algorithm: str = "HS256",
    header: Mapping[str, Any] | None = None,
) -> str:
    """A JWT HMAC-signed with ``secret``, built by hand (PyJWT refuses PEM secrets)."""
    head = {"alg": algorithm, "typ": "JWT", **(header or {})}
    signing_input = f"{_segment(head)}.{_segment(payload)}"
    key = secret.encode() if isinstance(secret, str) else secret
    signature = hmac.new(key, signing_input.encode(), _HMAC_HASHES[algorithm]).digest()
    return f"{signing_input}.{_b64url(signature)}"


def bearer(token: str) -> str:
    """The Authorization header value carrying ``token``."""
    return f"Bearer {token}"


# Authorization header values that must never authenticate user ``sub``, by case name:
# each takes the user id and returns the header value (None: no Authorization header).
REJECTED_AUTHORIZATIONS: dict[str, Callable[[str], str | None]] = {
    "expired": lambda sub: bearer(mint_token(claims=session_claims(sub=sub, now=1_700_000_000))),
    "no-exp": lambda sub: bearer(mint_token(sub=sub, omit=["exp"])),
    "no-sub": lambda sub: bearer(mint_token(omit=["sub"])),
    "not-yet-valid": lambda sub: bearer(mint_token(sub=sub, now=time.time() + 3600)),
    "wrong-key": lambda sub: bearer(mint_token(other_keys(), sub=sub)),
    "wrong-azp": lambda sub: bearer(mint_token(sub=sub, azp="https://evil.example")),
    "empty-azp": lambda sub: bearer(mint_token(sub=sub, azp="")),
    "none-alg": lambda sub: bearer(unsigned_token(session_claims(sub=sub))),
    "hs256-public-pem": lambda sub: bearer(hmac_token(session_claims(sub=sub), instance_keys().public_pem)),
    "hs256-flat-pem": lambda sub: bearer(
        hmac_token(session_claims(sub=sub), instance_keys().public_pem.replace("\n", ""))
    ),
    "garbage": lambda sub: "Bearer not.a.jwt",
    "api-key-shaped": lambda sub: "Bearer ak_2pWx4Yqk7TzL0mN3bV8cR1sD5fG",
    "too-large": lambda sub: bearer(mint_token(sub=sub, pad="x" * 9000)),
    "missing-header": lambda sub: None,
    "basic-scheme": lambda sub: "Basic dXNlcjpwYXNz",
    "empty-bearer": lambda sub: "Bearer ",
}
