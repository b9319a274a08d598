"""What the processor knows about a user and a template: Cassandra reads behind a cache.

A batch of requests costs one round of IN queries for its cache misses, through the
driver's async API, so the event loop never blocks on a query. Cassandra failures fail
closed: the query is retried with backoff until it answers, because sending without the
opt-out check is worse than sending late. `users.changes` events drop a user's cached
rows (see `invalidate_user`), `templates.changes` events a template's (`invalidate_template`).
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from cassandra import InvalidRequest
from cassandra.cluster import Session

from infra import retry
from infra.cache import TTLCache
from infra.cassandra import aexecute, prepare_lookup
from processors import metrics
from processors.decisions import Device
from schemas.validation import (
    ValidationError,
    normalize_phone,
    validate_email,
    validate_token,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class UserView:
    user_id: str
    # As stored; validated and normalized on first use (`email`, `phone`): most requests
    # need neither, and checking both cost ~110 µs of every cache miss.
    stored_email: str | None
    stored_phone: str | None
    locale: str | None
    timezone: str | None
    quiet_start: int | None
    quiet_end: int | None
    unsubscribed_all: bool
    devices: tuple[Device, ...] = ()
    preferences: Mapping[tuple[str, str], bool] = field(default_factory=dict)
    # Device rows stored but malformed (written around intake's validation): never sent to.
    bad_devices: int = 0

    @functools.cached_property
    def _email(self) -> tuple[str | None, bool]:
        return _valid(validate_email, self.stored_email)

    @functools.cached_property
    def _phone(self) -> tuple[str | None, bool]:
        return _valid(normalize_phone, self.stored_phone)

    @property
    def email(self) -> str | None:
        return self._email[0]

    @property
    def bad_email(self) -> bool:
        """An address was stored but is malformed: never sent to."""
        return self._email[1]

    @property
    def phone(self) -> str | None:
        return self._phone[0]

    @property
    def bad_phone(self) -> bool:
        return self._phone[1]


@dataclass(frozen=True)
class TemplateRow:
    locale: str
    channel: str
    title: str | None
    subject: str | None
    body: str | None
    html: str | None
    # A digest the template declares (every row of the template carries it).
    digest_key: str | None = None
    digest_window_s: int | None = None
    digest_template: str | None = None


# user_id -> UserView, or None when the user does not exist (cached too, briefly).
_UNKNOWN = "unknown"


async def retrying(
    session: Session, stmt: Any, params: Any, *, max_backoff_s: float
) -> list[dict[str, Any]]:
    """Run a query until it succeeds; only a malformed query (our bug) raises."""

    def retried(exc: Exception, delay: float) -> None:
        metrics.CASSANDRA_RETRIES.inc()
        log.warning(
            "cassandra query failed, retrying",
            extra={"error": type(exc).__name__, "retry_in_s": delay},
        )

    # Timeouts, unavailable, no host, anything but a malformed query: worth retrying.
    return await retry.retrying(
        lambda: aexecute(session, stmt, params),
        retry.Backoff(0.05, max_backoff_s),
        retriable=lambda exc: not isinstance(exc, InvalidRequest),
        on_retry=retried,
    )


# Keys per IN query or unlogged batch: one request to the coordinator covers many
# partitions, yet no coordinator gathers a huge result.
CHUNK = 100


def chunks(keys: list[Any], n: int = CHUNK) -> list[list[Any]]:
    return [keys[i : i + n] for i in range(0, len(keys), n)]


class Enricher:
    """Users and templates for a whole batch: cache hits first, then every miss in one
    round of IN queries (one per table and chunk of keys), never one query per request."""

    def __init__(
        self, session: Session, *, ttl_s: float, max_entries: int, max_backoff_s: float
    ) -> None:
        self._session = session
        self._backoff = max_backoff_s
        self._users: TTLCache[UserView | str] = TTLCache(max_entries, ttl_s)
        self._templates: TTLCache[tuple[TemplateRow, ...]] = TTLCache(max_entries // 10, ttl_s)
        self._user = prepare_lookup(
            session,
            "SELECT user_id, email, phone, locale, timezone, quiet_start, quiet_end,"
            " unsubscribed_all FROM users WHERE user_id IN ?",
        )
        self._devices = prepare_lookup(
            session,
            "SELECT user_id, device_id, platform, device_token FROM devices_by_user"
            " WHERE user_id IN ?",
        )
        self._prefs = prepare_lookup(
            session, "SELECT user_id, channel, category, opt_in FROM preferences WHERE user_id IN ?"
        )
        self._template = prepare_lookup(
            session,
            "SELECT template_id, locale, channel, title, subject, body, html, digest_key,"
            " digest_window_s, digest_template FROM templates"
            " WHERE template_id IN ?",
        )

    async def _q(self, stmt: Any, keys: list[str]) -> list[dict[str, Any]]:
        parts = await asyncio.gather(
            *(
                retrying(self._session, stmt, (chunk,), max_backoff_s=self._backoff)
                for chunk in chunks(keys)
            )
        )
        return [row for part in parts for row in part]

    async def users(self, user_ids: set[str]) -> dict[str, UserView | None]:
        """Every user of `user_ids`: its view, or None when no such user exists."""
        out: dict[str, UserView | None] = {}
        missing: list[str] = []
        for uid in user_ids:
            cached = self._users.get(uid)
            if cached is None:
                missing.append(uid)
            else:
                out[uid] = None if cached == _UNKNOWN else cached  # type: ignore[assignment]
        metrics.CACHE_LOOKUPS.labels("user", "hit").inc(len(out))
        if not missing:
            return out
        metrics.CACHE_LOOKUPS.labels("user", "miss").inc(len(missing))
        users, devices, prefs = await asyncio.gather(
            self._q(self._user, missing),
            self._q(self._devices, missing),
            self._q(self._prefs, missing),
        )
        devices_of: dict[str, list[dict[str, Any]]] = {}
        for d in devices:
            devices_of.setdefault(d["user_id"], []).append(d)
        prefs_of: dict[str, list[dict[str, Any]]] = {}
        for p in prefs:
            prefs_of.setdefault(p["user_id"], []).append(p)
        for u in users:
            uid = u["user_id"]
            view = _view(u, devices_of.get(uid, []), prefs_of.get(uid, []))
            self._users.put(uid, view)
            out[uid] = view
        for uid in missing:
            if uid not in out:
                self._users.put(uid, _UNKNOWN)
                out[uid] = None
        return out

    async def templates(self, template_ids: set[str]) -> dict[str, tuple[TemplateRow, ...]]:
        out: dict[str, tuple[TemplateRow, ...]] = {}
        missing: list[str] = []
        for tid in template_ids:
            cached = self._templates.get(tid)
            if cached is None:
                missing.append(tid)
            else:
                out[tid] = cached
        metrics.CACHE_LOOKUPS.labels("template", "hit").inc(len(out))
        if not missing:
            return out
        metrics.CACHE_LOOKUPS.labels("template", "miss").inc(len(missing))
        rows: dict[str, list[TemplateRow]] = {tid: [] for tid in missing}
        for r in await self._q(self._template, missing):
            rows[r["template_id"]].append(
                TemplateRow(
                    r["locale"],
                    r["channel"],
                    r["title"],
                    r["subject"],
                    r["body"],
                    r["html"],
                    r["digest_key"],
                    r["digest_window_s"],
                    r["digest_template"],
                )
            )
        for tid, found in rows.items():
            out[tid] = tuple(found)
            self._templates.put(tid, out[tid])
        return out

    def invalidate_user(self, user_id: str) -> None:
        self._users.invalidate(user_id)

    def invalidate_template(self, template_id: str) -> None:
        self._templates.invalidate(template_id)

    @property
    def hit_rate(self) -> float:
        hits = self._users.hits + self._templates.hits
        total = hits + self._users.misses + self._templates.misses
        return hits / total if total else 0.0


def _view(
    u: dict[str, Any], devices: list[dict[str, Any]], prefs: list[dict[str, Any]]
) -> UserView:
    """A user's rows as the decisions need them: device tokens checked now, contacts on
    first use, each once."""
    good: list[Device] = []
    for d in devices:
        platform = d["platform"] or ""
        token, _bad = _valid(functools.partial(validate_token, platform), d["device_token"])
        if token is not None:
            good.append(Device(d["device_id"], platform, token))
    return UserView(
        user_id=u["user_id"],
        stored_email=u["email"],
        stored_phone=u["phone"],
        locale=u["locale"],
        timezone=u["timezone"],
        quiet_start=u["quiet_start"],
        quiet_end=u["quiet_end"],
        unsubscribed_all=bool(u["unsubscribed_all"]),
        devices=tuple(good),
        bad_devices=len(devices) - len(good),
        preferences={
            (p["channel"], p["category"]): bool(p["opt_in"])
            for p in prefs
            if p["opt_in"] is not None
        },
    )


def _valid(check: Callable[[str], str], value: str | None) -> tuple[str | None, bool]:
    """(normalized value or None, whether a value was there but invalid)."""
    if not value:
        return None, False
    try:
        return check(value), False
    except ValidationError:
        return None, True


def pick_template(
    rows: tuple[TemplateRow, ...], channel: str, locales: list[str]
) -> TemplateRow | None:
    """The row for `channel` in the first locale of `locales` that has one."""
    by_locale = {r.locale: r for r in rows if r.channel == channel}
    for loc in locales:
        if loc in by_locale:
            return by_locale[loc]
    return None
