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

from ..cli.common import fail
from ..dispatch import EVENT_TYPES
from ..events import parse_event
from ..services import current_services
from . import sample_events, sample_organizations
from .local_clerk import LOCAL_SECRET_PREFIX, TOKEN_PATH, USERS_PATH

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
@click.option("--org-id", help="Clerk organization id (default: the local Clerk's organization).")
@click.option("--new", "new_user", is_flag=True, help="A new user or organization, not the local Clerk's.")
@click.option("--email", help="Primary email address.")
@click.option("--username", help="Clerk username.")
@click.option("--first-name")
@click.option("--last-name")
@click.option("--name", help="Organization name.")
@click.option("--role", help="Membership role, e.g. org:admin (default: the sample's).")
@with_appcontext
def send_test_event(
    event_type: str,
    url: str,
    user_id: str | None,
    org_id: str | None,
    new_user: bool,
    email: str | None,
    username: str | None,
    first_name: str | None,
    last_name: str | None,
    name: str | None,
    role: str | None,
) -> None:
    """Build a realistic Clerk event, sign it with the configured secret and post it.

    User events are about a user of the local Clerk (Ada by default); organization events
    about its organization; membership events about a user's membership of it.
    """
    secret = current_services().config.webhook_signing_secret
    if new_user and (user_id or org_id):
        fail("--new excludes --user-id and --org-id")
    entry = EVENT_TYPES[event_type]
    if entry.resource == "users":
        changes = {"email": email, "first_name": first_name, "last_name": last_name, "username": username}
        data = _user_data(event_type, user_id, new_user, changes)
    elif entry.resource == "organizations":
        data = _organization_data(event_type, org_id, new_user, name)
    else:
        data = _membership_data(user_id, org_id, new_user, role)
    envelope = sample_events.make_webhook_event(event_type, data)
    body, headers = sample_events.signed_delivery(envelope, secret)
    try:
        response = httpx.post(url, content=body, headers=headers, timeout=15)
    except httpx.HTTPError as exc:
        fail(f"could not post to {url}: {type(exc).__name__}")
    subject = entry.subject(parse_event(body.encode()))
    delivery = f"{event_type} for {subject.id} ({headers['svix-id']})"
    click.echo(f"{delivery} -> {response.status_code} {response.text.strip()}")
    if response.status_code >= 300:
        sys.exit(1)


def _user_data(
    event_type: str, user_id: str | None, new: bool, given: dict[str, str | None]
) -> dict[str, Any]:
    user = None if new else _sample_user(user_id)
    if EVENT_TYPES[event_type].redacted:
        target = user["id"] if user is not None else user_id
        if target is None:
            fail(f"{event_type} needs an existing user: give --user-id, or leave it out for Ada")
        return sample_events.make_deleted_data(target)
    changes: dict[str, Any] = {k: v for k, v in given.items() if v is not None}
    if user is None:  # --new, or an id the local Clerk does not have
        data = sample_events.make_clerk_user(user_id, **changes)
    elif "email" in changes:  # rebuild the addresses around the new primary one
        kept = {k: user[k] for k in ("first_name", "last_name", "username")}
        data = sample_events.make_clerk_user(user["id"], **(kept | changes))
    else:
        data = dict(user, **changes)
    data["updated_at"] = sample_events.now_ms()
    return data


def _sample_organization(org_id: str | None, new: bool) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The local Clerk's organization and its memberships (or a new organization, or one
    with the id given, which the local Clerk has no memberships of)."""
    if new:
        organization = sample_organizations.make_organization(
            seed=sample_events.now_ms(), created_at=sample_events.now_ms()
        )
        return organization, []
    [society], members = sample_organizations.sample_organizations()
    if org_id is None or org_id == society["id"]:
        return society, members
    return sample_organizations.make_organization(org_id), []


def _organization_data(event_type: str, org_id: str | None, new: bool, name: str | None) -> dict[str, Any]:
    organization, _ = _sample_organization(org_id, new)
    if EVENT_TYPES[event_type].redacted:
        return sample_organizations.make_deleted_organization(organization["id"])
    return dict(organization, **({"name": name} if name else {}), updated_at=sample_events.now_ms())


def _membership_data(user_id: str | None, org_id: str | None, new: bool, role: str | None) -> dict[str, Any]:
    """The membership of the user (Ada by default) in the organization, changed now: the
    whole membership, as all three membership events carry it."""
    user = _sample_user(user_id) if not new else None
    if user is None:
        user = sample_events.make_clerk_user(user_id)
    organization, members = _sample_organization(org_id, new)
    sample = next((m for m in members if m["public_user_data"]["user_id"] == user["id"]), None)
    chosen_role = role or (sample["role"] if sample is not None else "org:member")
    metadata = sample["public_metadata"] if sample is not None else {}
    return sample_organizations.make_membership(
        organization, user, role=chosen_role, public_metadata=metadata, updated_at=sample_events.now_ms()
    )


@click.command("dev-token")
@click.argument("user_id", required=False)
@with_appcontext
def dev_token(user_id: str | None) -> None:
    """Print a session token (valid 60 s) for a user of the local Clerk that `make run` starts.

    USER_ID defaults to the first sample user (Ada). The token has no azp, as a native
    app's has. Refuses to run against any other Clerk.
    """
    users = sample_events.sample_users()
    user_id = user_id or users[0]["id"]
    known = ", ".join(u["id"] for u in users)
    response = _local_clerk(
        "dev-token",
        "POST",
        TOKEN_PATH,
        user_id,
        json={"user_id": user_id},
        no_user=f"; its sample users are {known}",
        refused=f" to {TOKEN_PATH}",
    )
    click.echo(response.json()["jwt"])


@click.command("dev-change-user")
@click.argument("user_id", required=False)
@click.option("--first-name")
@click.option("--last-name")
@click.option("--username")
@click.option("--delete", is_flag=True, help="Delete the user instead.")
@with_appcontext
def dev_change_user(
    user_id: str | None, first_name: str | None, last_name: str | None, username: str | None, delete: bool
) -> None:
    """Change (or delete) a user in the local Clerk that `make run` starts, sending no
    webhook: the watcher repairs the database within a pass or two (WATCH_INTERVAL_S).

    USER_ID defaults to the first sample user (Ada). Refuses to run against any other Clerk.
    """
    given = {"first_name": first_name, "last_name": last_name, "username": username}
    changes = {k: v for k, v in given.items() if v is not None}
    if not delete and not changes:
        fail("say what changes: --first-name, --last-name or --username (or --delete)")
    user_id = user_id or sample_events.sample_users()[0]["id"]
    method = "DELETE" if delete else "PATCH"
    _local_clerk("dev-change-user", method, USERS_PATH + user_id, user_id, json=None if delete else changes)
    what = "deleted" if delete else f"changed ({', '.join(sorted(changes))})"
    click.echo(f"{user_id} {what} in the local Clerk, with no webhook: the watcher repairs it")


def _local_clerk(
    command: str,
    method: str,
    path: str,
    user_id: str,
    *,
    json: Any = None,
    no_user: str = "",
    refused: str = "",
) -> httpx.Response:
    """The local Clerk's 200 answer to ``command``'s request about ``user_id``, or one line
    saying why there is none.

    Any Clerk but the local one is refused before anything is sent: these commands must
    never change a real Clerk. A 404 means the local Clerk has no such user (``no_user``
    is added to that line), any other answer but 200 is a refusal (``refused`` is added).
    """
    config = current_services().config
    secret = config.clerk_secret_key or ""
    api = config.clerk_api_url
    if urlsplit(api).hostname not in LOOPBACK_HOSTS or not secret.startswith(LOCAL_SECRET_PREFIX):
        fail(f"{command} only works against the local Clerk that `make run` starts, not {api}")
    headers = {"Authorization": f"Bearer {secret}"}
    try:
        response = httpx.request(method, api.rstrip("/") + path, json=json, headers=headers, timeout=5)
    except httpx.HTTPError as exc:
        fail(f"the local Clerk at {api} is not answering ({type(exc).__name__}); is `make run` running?")
    if response.status_code == 404:
        fail(f"the local Clerk has no user {user_id}{no_user}")
    if response.status_code != 200:
        fail(f"the local Clerk answered {response.status_code}{refused}")
    return response


DEV_COMMANDS = (send_test_event, dev_token, dev_change_user)
