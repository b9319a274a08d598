"""The in-app inbox: each user's feed in `herald.inbox_items` (infra/cql/010_inbox.cql).

The `inapp` sender writes items (`InboxStore.write`); the send API reads the feed, changes
an item's state (seen, read, archived) and streams new items (`InboxStore.newer`). Both
sides share this module so the table has one owner.

A feed is bounded twice: every row expires after `ttl_s`, and only the newest `max_items`
are shown; older ones are range-deleted when a read finds them (one tombstone per trim).
Filters (unread, category, archived) are applied to that bounded partition in process,
which costs one partition read of at most `max_items` rows per request.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from cassandra.cluster import Session
from cassandra.query import BatchStatement, BatchType
from pydantic import BaseModel

from infra.cassandra import aexecute
from schemas.errors import HeraldError

State = Literal["seen", "read", "archived"]
STATES: tuple[State, ...] = ("seen", "read", "archived")
_COLUMNS = (
    "user_id, created_at, item_id, notification_id, category, title, body, data,"
    " seen_at, read_at, archived_at, TTL(body) AS ttl"
)


class InboxSettings(BaseModel):
    # How long an item stays in a feed, and how many of a user's newest items are kept.
    ttl_s: int = 90 * 86_400
    max_items: int = 500
    # Page size of `GET /v1/users/{id}/feed` when the caller gives none, and its maximum.
    page_size: int = 20
    max_page_size: int = 100
    # The live stream checks the feed this often, and looks back this far for items a
    # late sender wrote with an earlier fan-out time than one already streamed (retry
    # tiers wait 5 + 30 + 120 s by default).
    stream_poll_s: float = 1.0
    stream_lookback_s: float = 300.0
    stream_heartbeat_s: float = 15.0
    # User tokens (signed like the preference links, purpose `inbox`): lifetime and ceiling.
    token_ttl_s: int = 900
    token_max_ttl_s: int = 3600
    # Who may frame the embeddable page (`/inbox`): a CSP frame-ancestors source list.
    frame_ancestors: str = "'self'"


class BadCursor(HeraldError, ValueError):
    """A pagination cursor that this API did not issue; answer 400, never retry as is."""


@dataclass(frozen=True)
class Item:
    user_id: str
    item_id: str
    created_at: datetime  # UTC
    notification_id: str
    category: str
    title: str | None
    body: str
    data: dict[str, str]
    seen_at: datetime | None = None
    read_at: datetime | None = None
    archived_at: datetime | None = None
    ttl: int | None = None  # seconds left, as Cassandra reports it

    @property
    def cursor(self) -> str:
        return encode_cursor(self.created_at, self.item_id)

    def as_json(self) -> dict[str, Any]:
        return {
            "item_id": self.item_id,
            "notification_id": self.notification_id,
            "category": self.category,
            "title": self.title,
            "body": self.body,
            "data": self.data,
            "created_at": _iso(self.created_at),
            "seen": self.seen_at is not None,
            "read": self.read_at is not None,
            "archived": self.archived_at is not None,
            "seen_at": _iso(self.seen_at),
            "read_at": _iso(self.read_at),
            "archived_at": _iso(self.archived_at),
        }


def _iso(value: datetime | None) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value is not None else None


def _utc(value: datetime | None) -> datetime | None:
    # The driver returns naive datetimes in UTC.
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)


def _item(row: dict[str, Any]) -> Item:
    created = _utc(row["created_at"])
    assert created is not None
    return Item(
        user_id=row["user_id"],
        item_id=row["item_id"],
        created_at=created,
        notification_id=row["notification_id"] or "",
        category=row["category"] or "",
        title=row["title"],
        body=row["body"] or "",
        data=dict(row["data"] or {}),
        seen_at=_utc(row["seen_at"]),
        read_at=_utc(row["read_at"]),
        archived_at=_utc(row["archived_at"]),
        ttl=row.get("ttl"),
    )


def encode_cursor(created_at: datetime, item_id: str) -> str:
    ms = int(created_at.timestamp() * 1000)
    return base64.urlsafe_b64encode(f"{ms}:{item_id}".encode()).rstrip(b"=").decode()


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        ms, _, item_id = raw.partition(":")
        if not item_id:
            raise ValueError("no item id")
        return datetime.fromtimestamp(int(ms) / 1000, UTC), item_id
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise BadCursor("not a cursor this API issued") from None


@dataclass(frozen=True)
class Page:
    items: list[Item]
    next_cursor: str | None


@dataclass(frozen=True)
class NewItem:
    """What the sender writes for one `inapp` delivery."""

    user_id: str
    item_id: str
    created_at: datetime
    notification_id: str
    category: str
    title: str | None
    body: str
    data: dict[str, str]


class InboxStore:
    def __init__(self, session: Session, settings: InboxSettings | None = None) -> None:
        self.session = session
        self.settings = settings or InboxSettings()
        self._insert = session.prepare(
            "INSERT INTO inbox_items (user_id, created_at, item_id, notification_id, category,"
            " title, body, data) VALUES (?, ?, ?, ?, ?, ?, ?, ?) USING TTL ?"
        )
        self._recent = session.prepare(
            f"SELECT {_COLUMNS} FROM inbox_items WHERE user_id = ? LIMIT ?"
        )
        self._since = session.prepare(
            f"SELECT {_COLUMNS} FROM inbox_items WHERE user_id = ? AND created_at > ?"
        )
        self._set = {
            state: session.prepare(
                f"UPDATE inbox_items USING TTL ? SET {state}_at = ? WHERE user_id = ?"
                " AND created_at = ? AND item_id = ?"
            )
            for state in STATES
        }
        self._trim = session.prepare("DELETE FROM inbox_items WHERE user_id = ? AND created_at < ?")

    # -- the sender's side ---------------------------------------------------------------

    async def write(self, items: Sequence[NewItem]) -> None:
        """Store items; writing the same item again rewrites the same row (idempotent)."""
        batch = BatchStatement(batch_type=BatchType.UNLOGGED)
        for it in items:
            batch.add(
                self._insert,
                (
                    it.user_id,
                    it.created_at,
                    it.item_id,
                    it.notification_id,
                    it.category,
                    it.title,
                    it.body,
                    it.data,
                    self.settings.ttl_s,
                ),
            )
        await aexecute(self.session, batch)

    # -- the API's side ------------------------------------------------------------------

    async def recent(self, user_id: str) -> list[Item]:
        """The user's newest `max_items` items, newest first; trims what lies beyond."""
        cap = self.settings.max_items
        rows = await aexecute(self.session, self._recent, (user_id, cap + 1))
        items = [_item(r) for r in rows]
        if len(items) > cap:
            # Everything older than the oldest kept item goes in one range tombstone.
            await aexecute(self.session, self._trim, (user_id, items[cap - 1].created_at))
            items = items[:cap]
        return items

    async def page(
        self,
        user_id: str,
        *,
        limit: int,
        cursor: str | None = None,
        unread: bool = False,
        category: str | None = None,
        archived: bool = False,
    ) -> Page:
        """Items after `cursor` (newest first) matching the filters: unarchived ones unless
        `archived`, then only archived ones."""
        after = decode_cursor(cursor) if cursor else None
        out: list[Item] = []
        more = False
        for it in await self.recent(user_id):
            if after is not None and (
                it.created_at > after[0] or (it.created_at == after[0] and it.item_id <= after[1])
            ):
                continue  # at or before the cursor in feed order (newest first, then id)
            if (it.archived_at is not None) != archived:
                continue
            if unread and it.read_at is not None:
                continue
            if category is not None and it.category != category:
                continue
            if len(out) == limit:
                more = True
                break
            out.append(it)
        return Page(out, out[-1].cursor if more and out else None)

    async def counts(self, user_id: str) -> dict[str, int]:
        live = [it for it in await self.recent(user_id) if it.archived_at is None]
        return {
            "total": len(live),
            "unread": sum(1 for it in live if it.read_at is None),
            "unseen": sum(1 for it in live if it.seen_at is None),
        }

    async def mark(
        self, user_id: str, item_ids: Iterable[str] | None, state: State
    ) -> tuple[list[str], list[Item]]:
        """Set `state` on the user's items among `item_ids` (None: all of them); (ids in the
        feed, items that changed now). An item already in that state is left as it is. Each
        cell is written with its row's remaining TTL, so the state never outlives the item."""
        wanted = None if item_ids is None else set(item_ids)
        found = [it for it in await self.recent(user_id) if wanted is None or it.item_id in wanted]
        now = datetime.now(UTC)
        batch = BatchStatement(batch_type=BatchType.UNLOGGED)
        changed = []
        for it in found:
            if getattr(it, f"{state}_at") is not None:
                continue
            batch.add(
                self._set[state],
                (max(1, it.ttl or self.settings.ttl_s), now, user_id, it.created_at, it.item_id),
            )
            changed.append(it)
        if changed:
            await aexecute(self.session, batch)
        return [it.item_id for it in found], changed

    async def newer(self, user_id: str, since: datetime) -> list[Item]:
        """Items fanned out after `since`, oldest first (the live stream's poll)."""
        rows = await aexecute(self.session, self._since, (user_id, since))
        return sorted((_item(r) for r in rows), key=lambda it: (it.created_at, it.item_id))

    def lookback(self, now: datetime) -> datetime:
        return now - timedelta(seconds=self.settings.stream_lookback_s)
