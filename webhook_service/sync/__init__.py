"""``POST /api/users/sync``: pull one user fresh from Clerk into the app's collections,
at most once per user per ``SYNC_MIN_INTERVAL_S`` (the claims, ``claims.py``)."""

from .claims import SyncClaim, SyncClaims
from .user_sync import SingleFlight, SyncedUserGone, SyncResult, UserSync, public_user, sync_user

__all__ = [
    "SingleFlight",
    "SyncClaim",
    "SyncClaims",
    "SyncResult",
    "SyncedUserGone",
    "UserSync",
    "public_user",
    "sync_user",
]
