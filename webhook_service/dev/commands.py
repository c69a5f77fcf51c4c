"""Development commands: a signed sample webhook, and a session token from the local Clerk.

Both tell the same story as the local Clerk that ``make run`` starts: by default the
event is about its first sample user (Ada), and ``dev-token`` signs for one of its users.
"""

from __future__ import annotations

import sys
from typing import Any
from urllib.parse import urlsplit

import click
import httpx
from flask.cli import with_appcontext

from ..cli import fail
from ..dispatch import EVENT_TYPES
from ..services import current_services
from . import sample_events
from .local_clerk import LOCAL_SECRET_PREFIX, TOKEN_PATH

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


def _sample_user(user_id: str | None) -> dict[str, Any] | None:
    """The local Clerk's user with this id (the first one when no id is given)."""
    users = sample_events.sample_users()
    if user_id is None:
        return users[0]
    return next((u for u in users if u["id"] == user_id), None)


@click.command("send-test-event")
@click.argument("event_type", type=click.Choice(sorted(EVENT_TYPES)))
@click.option("--url", default="http://127.0.0.1:8000/api/webhooks/clerk", show_default=True)
@click.option("--user-id", help="Clerk user id (default: the local Clerk's first user, Ada).")
@click.option("--new", "new_user", is_flag=True, help="A new user, not one of the local Clerk's.")
@click.option("--email", help="Primary email address.")
@click.option("--username", help="Clerk username.")
@click.option("--first-name")
@click.option("--last-name")
@with_appcontext
def send_test_event(
    event_type: str,
    url: str,
    user_id: str | None,
    new_user: bool,
    email: str | None,
    username: str | None,
    first_name: str | None,
    last_name: str | None,
) -> None:
    """Build a realistic Clerk event, sign it with the configured secret and post it."""
    secret = current_services().config.webhook_signing_secret
    if new_user and user_id:
        fail("--new and --user-id exclude each other")
    user = None if new_user else _sample_user(user_id)
    if EVENT_TYPES[event_type].redacted:
        target = user["id"] if user is not None else user_id
        if target is None:
            fail(f"{event_type} needs an existing user: give --user-id, or leave it out for Ada")
        data = sample_events.make_deleted_data(target)
    else:
        given = {"email": email, "first_name": first_name, "last_name": last_name, "username": username}
        changes: dict[str, Any] = {k: v for k, v in given.items() if v is not None}
        if user is None:  # --new, or an id the local Clerk does not have
            data = sample_events.make_clerk_user(user_id, **changes)
        elif "email" in changes:  # rebuild the addresses around the new primary one
            kept = {k: user[k] for k in ("first_name", "last_name", "username")}
            data = sample_events.make_clerk_user(user["id"], **(kept | changes))
        else:
            data = dict(user, **changes)
        data["updated_at"] = sample_events.now_ms()
    body, headers = sample_events.signed_delivery(sample_events.make_webhook_event(event_type, data), secret)
    try:
        response = httpx.post(url, content=body, headers=headers, timeout=15)
    except httpx.HTTPError as exc:
        fail(f"could not post to {url}: {type(exc).__name__}")
    delivery = f"{event_type} for {data['id']} ({headers['svix-id']})"
    click.echo(f"{delivery} -> {response.status_code} {response.text.strip()}")
    if response.status_code >= 300:
        sys.exit(1)


@click.command("dev-token")
@click.argument("user_id", required=False)
@with_appcontext
def dev_token(user_id: str | None) -> None:
    """Print a session token (valid 60 s) for a user of the local Clerk that `make run` starts.

    USER_ID defaults to the first sample user (Ada). The token has no azp, as a native
    app's has. Refuses to run against any other Clerk.
    """
    config = current_services().config
    secret = config.clerk_secret_key or ""
    api = config.clerk_api_url
    if urlsplit(api).hostname not in LOOPBACK_HOSTS or not secret.startswith(LOCAL_SECRET_PREFIX):
        fail(f"dev-token only works against the local Clerk that `make run` starts, not {api}")
    user_id = user_id or sample_events.sample_users()[0]["id"]
    url = api.rstrip("/") + TOKEN_PATH
    try:
        response = httpx.post(
            url, json={"user_id": user_id}, headers={"Authorization": f"Bearer {secret}"}, timeout=5
        )
    except httpx.HTTPError as exc:
        fail(f"the local Clerk at {api} is not answering ({type(exc).__name__}); is `make run` running?")
    if response.status_code == 404:
        known = ", ".join(u["id"] for u in sample_events.sample_users())
        fail(f"the local Clerk has no user {user_id}; its sample users are {known}")
    if response.status_code != 200:
        fail(f"the local Clerk answered {response.status_code} to {TOKEN_PATH}")
    click.echo(response.json()["jwt"])


DEV_COMMANDS = (send_test_event, dev_token)
