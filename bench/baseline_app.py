"""The baseline: the few lines of Clerk's guide, as a Flask app.

Verify the Svix signature, ``json.loads`` the body, one write: ``update_one(upsert=True)``
of the mapped fields for ``user.created``/``user.updated``, ``delete_one`` for
``user.deleted``. No dedupe, no ordering, no tombstones, no event log, no metrics, no log
line. It runs under the same gunicorn command and settings as the service
(``gunicorn 'bench.baseline_app:create_app()'``), with the same MongoDB write concern, so
the comparison is about the code and not about durability settings.
"""

from __future__ import annotations

import json
import os

from flask import Flask, jsonify, request
from pymongo import MongoClient, WriteConcern
from pymongo.database import Database
from svix.webhooks import Webhook


def mapped_fields(user: dict) -> dict:
    """The guide's mapping of a Clerk user onto the app's fields."""
    primary = user.get("primary_email_address_id")
    email = next((e["email_address"] for e in user.get("email_addresses", []) if e["id"] == primary), None)
    return {
        "clerkId": user["id"],
        "email": email,
        "firstName": user.get("first_name") or "",
        "lastName": user.get("last_name") or "",
        "username": user.get("username") or (email or "").split("@")[0],
        "profilePicture": user.get("image_url") or "",
    }


def connect(uri: str) -> Database:
    """The database named by the URI, with the service's default write concern."""
    client: MongoClient = MongoClient(uri, tz_aware=True, connect=False)
    return client.get_database(write_concern=WriteConcern(w="majority", j=True))


def create_app(db: Database | None = None) -> Flask:
    webhook = Webhook(os.environ["CLERK_WEBHOOK_SIGNING_SECRET"])
    users = (db if db is not None else connect(os.environ["MONGODB_URI"]))["users"]
    app = Flask(__name__)

    @app.post("/api/webhooks/clerk")
    def clerk_webhook():
        body = request.get_data()
        try:
            webhook.verify(body, request.headers)
        except Exception:
            return jsonify(error="invalid signature"), 400
        event = json.loads(body)
        data = event["data"]
        if event["type"] in ("user.created", "user.updated"):
            users.update_one({"clerkId": data["id"]}, {"$set": mapped_fields(data)}, upsert=True)
        elif event["type"] == "user.deleted":
            users.delete_one({"clerkId": data["id"]})
        return jsonify(ok=True)

    @app.get("/healthz")
    def healthz():
        return jsonify(status="ok")

    return app
