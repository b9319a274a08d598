"""What the demo prints: what each emulator received, what was dropped, deferred or
digested and why, and one user's in-app inbox read over the API."""

from __future__ import annotations

from collections import Counter
from typing import Any

import httpx
from rich.console import Console
from rich.table import Table

from herald.demo.fixtures import DemoUser
from infra.cassandra import connect
from infra.settings import CassandraSettings
from producers.clients import ClientStore
from producers.request import NotificationRequest

console = Console()


def _mask(address: str) -> str:
    if "@" in address:
        name, _, domain = address.partition("@")
        return f"{name[:2]}…@{domain}"
    return f"{address[:4]}…{address[-3:]}"


def print_report(
    batch: list[tuple[str, NotificationRequest]],
    users: list[DemoUser],
    events: list[dict[str, Any]],
    ledger: list[dict[str, Any]],
) -> None:
    names = {u.user_id: u.name for u in users}
    what = {req.notification_id: label for label, req in batch}
    for e in events:
        if e["event_id"].startswith("digest:"):  # digest:<user>:<key>:<window start>
            what.setdefault(e["notification_id"], f"digest '{e['event_id'].split(':')[2]}'")
    by_delivery = {e["delivery_id"]: e for e in events if e.get("delivery_id")}
    # The channel topics are shared: keep only what this batch caused.
    ledger = [entry for entry in ledger if entry.get("delivery_id") in by_delivery]

    received = Table(title="What the provider emulators received", show_lines=False)
    for col in ("provider", "channel", "user", "notification", "to", "content"):
        received.add_column(col)
    for entry in sorted(ledger, key=lambda e: (e["provider"], e.get("received_at_ms", 0))):
        event = by_delivery.get(entry.get("delivery_id"), {})
        text = " · ".join(str(entry[k]) for k in ("subject", "title", "body") if entry.get(k))
        received.add_row(
            entry["provider"],
            entry.get("channel") or event.get("channel", ""),
            names.get(event.get("user_id", ""), "?"),
            what.get(event.get("notification_id", ""), "?"),
            _mask(entry.get("address", "")),
            text[:60],
        )
    console.print(received)

    held = Table(title="What was dropped, deferred, digested or failed, and why")
    for col in ("user", "notification", "channel", "outcome", "reason"):
        held.add_column(col)
    for e in events:
        if e["outcome"] in {"dropped", "deferred", "digested", "failed", "dead_lettered"}:
            held.add_row(
                names.get(e["user_id"], e["user_id"]),
                what.get(e["notification_id"], "?"),
                e.get("channel") or "(all)",
                e["outcome"],
                e.get("reason") or "",
            )
    console.print(held)

    counts = Counter(e["outcome"] for e in events)
    console.print(
        f"[bold]{len(batch)} requests published[/bold] → "
        + ", ".join(f"{n} {o}" for o, n in counts.most_common())
        + f"; the emulators accepted {len(ledger)} messages."
    )


def show_inbox(base: str, cassandra: CassandraSettings, user: DemoUser, run: str) -> None:
    """What an app does: its backend mints a user token, the app reads the feed with it."""
    session = connect(cassandra)
    try:
        app_client = ClientStore(session).create(f"demo-app-{run}", scopes={"inbox:token"})
    finally:
        session.cluster.shutdown()
    keys = {
        "X-Herald-App-Key": app_client.client.app_key,
        "X-Herald-App-Secret": app_client.secret,
    }
    with httpx.Client(base_url=base, timeout=10) as http:
        minted = http.post(f"/v1/users/{user.user_id}/feed/token", headers=keys)
        minted.raise_for_status()
        bearer = {"Authorization": f"Bearer {minted.json()['token']}"}
        feed = http.get(f"/v1/users/{user.user_id}/feed", headers=bearer).json()
        table = Table(title=f"{user.name}'s in-app inbox (GET /v1/users/{{id}}/feed)")
        for col in ("received", "category", "title", "body", "read"):
            table.add_column(col)
        for item in feed["items"]:
            table.add_row(
                item["created_at"][11:19],
                item["category"],
                item["title"] or "",
                item["body"][:70],
                "yes" if item["read"] else "no",
            )
        console.print(table)
        before = feed["counts"]
        if feed["items"]:
            first = feed["items"][0]["item_id"]
            after = http.post(
                f"/v1/users/{user.user_id}/feed/read", json={"item_ids": [first]}, headers=bearer
            ).json()["counts"]
        else:
            after = before
    console.print(
        f"unread {before['unread']}, unseen {before['unseen']}; after POST …/feed/read of the "
        f"newest: unread {after['unread']} (a `read` status event is on notifications.status)"
    )
    console.print(f"embeddable page (live over SSE): {minted.json()['page_url']}")
