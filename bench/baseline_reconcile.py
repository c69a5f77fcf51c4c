"""The reconcile baseline: page through Clerk's users and upsert them one at a time.

    python -m bench.baseline_reconcile [MAX_USERS]

The same SDK call and pages (500, oldest first) as the service's ``reconcile``, the
baseline app's mapping, and one ``update_one(upsert=True)`` per user. Reads
MONGODB_URI, CLERK_SECRET_KEY and CLERK_API_URL.
"""

from __future__ import annotations

import os
import sys

from clerk_backend_api import Clerk

from bench.baseline_app import connect, mapped_fields


def main(argv: list[str]) -> int:
    limit = int(argv[1]) if len(argv) > 1 else sys.maxsize
    clerk = Clerk(bearer_auth=os.environ["CLERK_SECRET_KEY"], server_url=os.environ["CLERK_API_URL"] + "/v1")
    users = connect(os.environ["MONGODB_URI"])["users"]
    done = offset = 0
    while done < limit:
        page = clerk.users.list(request={"limit": 500, "offset": offset, "order_by": "+created_at"})
        if not page:
            break
        for user in page[: limit - done]:
            data = user.model_dump(mode="json", by_alias=True)
            users.update_one({"clerkId": data["id"]}, {"$set": mapped_fields(data)}, upsert=True)
            done += 1
        offset += len(page)
    print(f"upserted {done} users")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
