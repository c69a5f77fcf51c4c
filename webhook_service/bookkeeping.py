"""The service's own fields on every document it mirrors, by name.

A field map may not name them: they carry what ordering, dedupe, usernames, the sync
interval and reconcile rest on, so their names are the same for every app.
"""

from __future__ import annotations

VERSION = "clerkUpdatedAt"  # Clerk's updated_at (ms): the version every write is ordered by
LAST_DELIVERY = "lastDeliveryId"  # the svix-id of the delivery that wrote this version
CREATED_AT = "createdAt"  # when the service inserted the document
UPDATED_AT = "updatedAt"  # when the service last changed it
RECONCILE_RUN = "reconcileRun"  # the last reconcile run that saw it in Clerk's listing
SYNCED_AT = "clerkSyncedAt"  # when its last sync started (SYNC_MIN_INTERVAL_S)
USERNAME_LOWER = "usernameLower"  # the username as the unique, case-blind index holds it
USERNAME_SOURCE = "usernameSource"  # where the username came from (clerk, email, fallback)
MEMBERSHIP_KEY = "clerkMembershipKey"  # a membership's organization and user ids, as one key

BOOKKEEPING_FIELDS = (
    "_id",
    USERNAME_LOWER,
    USERNAME_SOURCE,
    VERSION,
    LAST_DELIVERY,
    SYNCED_AT,
    RECONCILE_RUN,
    CREATED_AT,
    UPDATED_AT,
    MEMBERSHIP_KEY,
)
# The service's timestamps, which a map may take over (an organization's createdAt from
# Clerk's created_at, say): then the service does not write its own there.
TIMESTAMPS = (CREATED_AT, UPDATED_AT)
# The fields no map may name.
RESERVED_FIELDS = tuple(name for name in BOOKKEEPING_FIELDS if name not in TIMESTAMPS)
