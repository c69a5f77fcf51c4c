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
)
