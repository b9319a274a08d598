"""The in-app inbox in the send API: a user's feed, its state, a live stream, and a small
embeddable page.

Who may call what:

- An API client with the `inbox:token` scope mints a short-lived **user token** for one of
  its users (`POST /v1/users/{id}/feed/token`) and hands it to that user's browser or app.
  The token is signed like the preference links (`infra.links`, purpose `inbox`) and names
  the user, the minting client and an expiry; it opens that one user's feed and nothing
  else: another user's feed answers 403.
- A server may instead use its app key with `inbox:read` (feed, counts, stream) or
  `inbox:write` (read / seen / archive).

Read and seen changes are announced on `notifications.status` (outcomes `read`, `seen`,
channel `inapp`, status ids deterministic per item and outcome), like email opens and
clicks; each only the first time the item changes.

The live stream (`GET …/feed/stream`, Server-Sent Events) polls the user's partition every
`stream_poll_s`: one cheap partition read per open stream per second, and it works with
any number of API replicas and no extra topic. It ends when the token expires (event
`expired`), so a revoked user loses the stream within `token_ttl_s`.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from html import escape
from importlib import resources
from typing import Any
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import HTMLResponse, StreamingResponse

from infra import topics
from infra.inbox import InboxStore, Item, State
from infra.links import Link, sign, verify
from producers.clients import ApiClient
from schemas.channels import Channel, Outcome
from schemas.events import status_event
from schemas.records import StatusEvent

# Which state change is announced on the status topic, and as which outcome.
ANNOUNCED: dict[State, str] = {"read": Outcome.READ, "seen": Outcome.SEEN}
MAX_IDS = 500


@dataclass(frozen=True)
class FeedAccess:
    """Who is asking for `user_id`'s feed: the user (with a token) or a server (a client)."""

    user_id: str
    client: ApiClient | None
    token: Link | None


def user_token(user_id: str, client_id: str, ttl_s: int, secret: Any) -> tuple[str, int]:
    expires = int(time.time()) + ttl_s
    return sign(Link("inbox", user_id, expires, client=client_id), secret), expires


def bearer(request: Request) -> str | None:
    """The user token: `Authorization: Bearer …`, or `?token=` where a header cannot be set
    (EventSource, the embeddable page)."""
    auth = request.headers.get("authorization", "")
    scheme, _, value = auth.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return request.query_params.get("token") or None


def page_token(token: str, secret: Any) -> Link:
    """The claims of a user token given to the embeddable page; BadLink if refused."""
    return verify(token, secret, "inbox")


def verify_user_token(token: str, user_id: str, secret: Any) -> Link:
    """The token's claims, if it is ours, unexpired, and for `user_id`; else BadLink or
    PermissionError (another user's token)."""
    link = verify(token, secret, "inbox")
    if link.user_id != user_id:
        raise PermissionError("this token is for another user")
    return link


def status_for(item: Item, outcome: str) -> StatusEvent:
    return status_event(
        notification_id=item.notification_id,
        delivery_id=item.item_id,
        event_id="",
        user_id=item.user_id,
        category=item.category or "unknown",
        channel=Channel.INAPP,
        outcome=outcome,
        source="inbox",
    )


def status_topic(prefix: str) -> str:
    return prefix + topics.STATUS


def parse_ids(body: Any) -> list[str] | None:
    """`{"item_ids": [...]}` → the ids; `{"all": true}` → None (every item). ValueError
    names what is wrong."""
    if not isinstance(body, dict):
        raise ValueError("a JSON object with item_ids or all")
    if body.get("all") is True and "item_ids" not in body:
        return None
    ids = body.get("item_ids")
    if not isinstance(ids, list) or not ids or not all(isinstance(i, str) and i for i in ids):
        raise ValueError("item_ids: a non-empty array of item ids (or all: true)")
    if len(ids) > MAX_IDS:
        raise ValueError(f"item_ids: at most {MAX_IDS}")
    return list(dict.fromkeys(ids))


def sse(event: str, data: Any, event_id: str | None = None) -> bytes:
    lines = [f"event: {event}"]
    if event_id is not None:
        lines.append(f"id: {event_id}")
    lines.append(f"data: {json.dumps(data, separators=(',', ':'))}")
    return ("\n".join(lines) + "\n\n").encode()


async def stream(
    request: Request, store: InboxStore, user_id: str, expires_at: float | None
) -> AsyncIterator[bytes]:
    """New items as they land in the feed: `item` events (id = the item's cursor), then a
    `counts` event; comments as heartbeats; `expired` when the token runs out."""
    s = store.settings
    sent: dict[str, datetime] = {}
    # What is already there is the page's business, not the stream's.
    for it in await store.newer(user_id, store.lookback(datetime.now(UTC))):
        sent[it.item_id] = it.created_at
    yield b"retry: 3000\n\n"
    yield sse("counts", await store.counts(user_id))
    last_beat = time.monotonic()
    while not await request.is_disconnected():
        if expires_at is not None and time.time() >= expires_at:
            yield sse("expired", {"message": "the user token expired; mint a new one"})
            return
        horizon = store.lookback(datetime.now(UTC))
        fresh = [it for it in await store.newer(user_id, horizon) if it.item_id not in sent]
        for it in fresh:
            sent[it.item_id] = it.created_at
            yield sse("item", it.as_json(), it.cursor)
        if fresh:
            yield sse("counts", await store.counts(user_id))
        for item_id, at in list(sent.items()):
            if at < horizon:
                del sent[item_id]
        if time.monotonic() - last_beat >= s.stream_heartbeat_s:
            yield b": ping\n\n"
            last_beat = time.monotonic()
        await asyncio.sleep(s.stream_poll_s)


def stream_response(body: AsyncIterator[bytes]) -> StreamingResponse:
    return StreamingResponse(
        body,
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


# -- the embeddable page --------------------------------------------------------------


def script() -> str:
    return (resources.files("producers") / "static" / "herald-inbox.js").read_text()


def _item_html(it: Item) -> str:
    state = "unread" if it.read_at is None else "read"
    title = f"<strong>{escape(it.title)}</strong> " if it.title else ""
    return (
        f'<li class="item {state}" data-item-id="{escape(it.item_id)}">'
        f"{title}<span class=body>{escape(it.body)}</span>"
        f' <time datetime="{escape(it.created_at.isoformat())}">'
        f"{escape(it.created_at.strftime('%Y-%m-%d %H:%M'))}</time></li>"
    )


def page(
    user_id: str, token: str, items: list[Item], counts: dict[str, int], frame_ancestors: str
) -> HTMLResponse:
    """The feed rendered on the server, and a small script that marks items read on click
    and adds new ones as they arrive over SSE. Works (read-only) without JavaScript."""
    feed = "".join(_item_html(it) for it in items) or ""
    empty = "" if items else '<p class="empty">Nothing here yet.</p>'
    body = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
<title>Notifications</title>
<style>
body{{font-family:system-ui,sans-serif;max-width:40rem;margin:1rem auto;padding:0 1rem}}
ul{{list-style:none;padding:0}}li{{padding:.6rem;border-bottom:1px solid #ddd;cursor:pointer}}
li.unread{{background:#eef5ff}}time{{color:#666;font-size:small}}
.badge{{background:#c00;color:#fff;border-radius:1rem;padding:0 .5rem;font-size:small}}
.badge[data-count="0"]{{display:none}}
</style></head><body>
<herald-inbox data-user="{escape(user_id)}" data-token="{escape(token)}">
<h1>Notifications <span class="badge" id="unread-badge" data-count="{counts["unread"]}"
 aria-label="unread notifications">{counts["unread"]}</span></h1>
<ul id="feed" aria-live="polite">{feed}</ul>{empty}
</herald-inbox>
<script src="/static/herald-inbox.js"></script>
</body></html>"""
    headers = {
        "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; "
        f"script-src 'self'; connect-src 'self'; frame-ancestors {frame_ancestors}",
        "Cache-Control": "no-store",
        "Referrer-Policy": "no-referrer",
    }
    return HTMLResponse(body, headers=headers)


def page_url(base_url: str, token: str) -> str:
    return f"{base_url.rstrip('/')}/inbox?token={quote(token)}"
