"""Digests: the requests of one user and digest key collected over a window, then sent as one
notification whose template receives `count` and the first `items`. Pure logic on the
table entries (JSON values of the Faust table `digests`); the pipeline does the I/O.

An entry per "user|key":

- `p`: the request-topic partition its items came from (= its changelog partition; only
  the worker that owns it emits it);
- `start`, `due`: the window, opened by its first item; `ids`: the event ids in it;
  `count`; `items`: the first `max_items` items; `head`: the request fields the digest
  takes from its first item (category, template, channels, locale, source);
- `late`: items that arrived after `due` but before the window was emitted: they open
  the next window when it is;
- `prev`, `prev_until`: the event ids of the window last emitted, kept a while so that a
  request replayed after a crash (its batch not yet acknowledged when the digest left)
  is not put in a second digest.

Emission is idempotent: the digest's event id is `digest:<user>:<key>:<window start>`, so
a crash after publishing it and before the entry is cleared publishes the same event id
again, which the processor's dedup drops.
"""

from __future__ import annotations

import json
from typing import Any

from schemas import ids

DIGEST_META = "herald.digest"  # request metadata of an emitted digest: key, count, items
SOURCE = "herald.digest"
# The request fields a digest inherits from its first item.
_HEAD = ("category", "template_id", "channels", "locale", "source", "trace_id")

Entry = dict[str, Any]


def table_key(user_id: str, key: str) -> str:
    return f"{user_id}|{key}"


def item_of(req: dict[str, Any], window_s: int, template_id: str | None) -> dict[str, Any]:
    """What an entry keeps of one request: enough to render it as one line of a digest."""
    return {
        "event_id": req["event_id"],
        "notification_id": req["notification_id"],
        "params": dict(req["params"]),
        "created_at": _ms(req["created_at"]),
        "window_s": window_s,
        "head": {
            **{k: req[k] for k in _HEAD},
            "template_id": template_id or req["template_id"],
        },
    }


def _ms(value: Any) -> int:
    return value if isinstance(value, int) else int(value.timestamp() * 1000)


def _window(user_id: str, key: str, partition: int, first: dict[str, Any], now: int) -> Entry:
    return {
        "p": partition,
        "user": user_id,
        "key": key,
        "start": now,
        "due": now + first["window_s"] * 1000,
        "head": first["head"],
        "ids": [],
        "count": 0,
        "items": [],
        "late": [],
        "prev": [],
        "prev_until": 0,
    }


def add(
    entry: Entry | None,
    user_id: str,
    key: str,
    partition: int,
    item: dict[str, Any],
    now: int,
    max_items: int,
    max_ids: int = 1000,
) -> tuple[Entry, bool]:
    """(entry with the item, whether it changed). An event id already in the window, in
    the late items or in the last emitted window is not added again. A window that reaches
    `max_ids` requests closes at once: the entry (one changelog record) stays bounded."""
    eid = item["event_id"]
    if entry is not None and (
        eid in entry["ids"]
        or eid in entry["prev"]
        or any(i["event_id"] == eid for i in entry["late"])
    ):
        return entry, False
    if entry is None or not entry["ids"]:
        base = entry or {}
        entry = {
            **_window(user_id, key, partition, item, now),
            "prev": base.get("prev", []),
            "prev_until": base.get("prev_until", 0),
        }
    else:
        entry = {**entry}
    if entry["due"] <= now:
        entry["late"] = [*entry["late"], item]
        return entry, True
    entry["ids"] = [*entry["ids"], eid]
    entry["count"] += 1
    if len(entry["items"]) < max_items:
        entry["items"] = [*entry["items"], item]
    if len(entry["ids"]) >= max_ids:
        entry["due"] = min(entry["due"], now)
    return entry, True


def is_due(entry: Entry, now: int) -> bool:
    return bool(entry["ids"]) and entry["due"] <= now


def is_spent(entry: Entry, now: int) -> bool:
    """Nothing pending and the last window's ids no longer needed: the entry can go."""
    return not entry["ids"] and not entry["late"] and entry["prev_until"] <= now


def event_id(entry: Entry) -> str:
    return f"digest:{entry['user']}:{entry['key']}:{entry['start']}"


def request(entry: Entry, now: int) -> dict[str, Any]:
    """The digest as a `herald.NotificationRequest`: it goes through every decision
    (opt-outs, quiet hours, rate limits) like any request, once."""
    head = entry["head"]
    eid = event_id(entry)
    meta = {
        "key": entry["key"],
        "count": entry["count"],
        "window_start": entry["start"],
        "items": [
            {"event_id": i["event_id"], "params": i["params"], "created_at": i["created_at"]}
            for i in entry["items"]
        ],
    }
    return {
        "event_id": eid,
        "notification_id": ids.notification_id(eid),
        "source": head["source"] or SOURCE,
        "user_id": entry["user"],
        "category": head["category"],
        "priority": "normal",
        "channels": list(head["channels"]),
        "template_id": head["template_id"],
        "params": dict(entry["items"][0]["params"]) if entry["items"] else {},
        "content": {},
        "locale": head["locale"],
        "send_at": None,
        "expires_at": None,
        "collapse_key": f"digest:{entry['key']}",
        "trace_id": head["trace_id"],
        "metadata": {DIGEST_META: json.dumps(meta, separators=(",", ":"))},
        "created_at": now,
        "digest": None,
    }


def after_emit(
    entry: Entry, now: int, keep_prev_s: int, max_items: int, max_ids: int = 1000
) -> Entry:
    """The entry once its window is emitted: the late items open the next window."""
    nxt: Entry = {
        **entry,
        "ids": [],
        "count": 0,
        "items": [],
        "late": [],
        "prev": list(entry["ids"]),
        "prev_until": now + keep_prev_s * 1000,
    }
    for item in entry["late"]:
        nxt, _ = add(nxt, entry["user"], entry["key"], entry["p"], item, now, max_items, max_ids)
    return nxt


def render_context(metadata: dict[str, str]) -> dict[str, Any] | None:
    """`count`, `items` (each with `params`, `created_at`, `event_id`) and `digest_key` for
    the template of an emitted digest; None for any other request."""
    raw = metadata.get(DIGEST_META)
    if raw is None:
        return None
    try:
        meta = json.loads(raw)
        return {
            "count": int(meta["count"]),
            "items": list(meta["items"]),
            "digest_key": meta["key"],
        }
    except (ValueError, KeyError, TypeError):
        return None
