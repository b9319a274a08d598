"""Helpers for the digest tests: a digest template, social requests that name a digest,
and reading back which items each sent digest carried."""

from __future__ import annotations

import uuid
from typing import Any

from tests.integration.processors.prockit import Harness

# The digest's body lists every item it carries (`n` of each), so a test can check that
# each item is in exactly one digest.
DIGEST_BODY = "{{ count }}:{% for i in items %}{{ i.params.n }};{% endfor %}"


def templates(h: Harness) -> tuple[str, str]:
    """(item template, digest template): one request's text, and the digest's."""
    tag = uuid.uuid4().hex[:8]
    item, digest = f"liked-{tag}", f"digest-{tag}"
    for template_id, body in ((item, "{{ n }} liked your post"), (digest, DIGEST_BODY)):
        h.session.execute(
            "INSERT INTO templates (template_id, locale, channel, title, body)"
            " VALUES (%s, 'en', 'inapp', 'Social', %s)",
            (template_id, body),
        )
    return item, digest


def social(
    h: Harness, user_id: str, n: str, names: tuple[str, str], window_s: int, **kw: Any
) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "category": "social",
        "channels": ["inapp"],
        "template_id": names[0],
        "content": {},
        "params": {"n": n},
        "digest": {"key": "social", "window_s": window_s, "template_id": names[1]},
    }
    return h.request(user_id, **{**fields, **kw})


def digests_of(h: Harness, user_id: str) -> dict[str, list[str]]:
    """notification id → the item `n`s of every digest delivered to the user's feed."""
    out: dict[str, list[str]] = {}
    with h.watcher.lock:
        for nid, records in h.watcher.deliveries.items():
            for _topic, d in records:
                if d["user_id"] == user_id and d["event_id"].startswith("digest:"):
                    count, _, listed = d["body"].partition(":")
                    items = [x for x in listed.split(";") if x]
                    assert int(count) == len(items), d["body"]
                    out[nid] = items
    return out
