"""What the processor does with one request record, from raw bytes to fan-out.

Order of decisions (each drop or deferral writes a status event with its reason):
decode (else request DLQ) → dedup → expired → scheduled for later (hold) → unknown user
→ per channel: unsubscribed / opted out / no contact or device → quiet hours (hold) →
render (missing parameter: request DLQ) → per delivery channel: rate limit → fan out →
`accepted`. The request's event id is recorded as processed only after every record
of the fan-out is acknowledged by Kafka, so a crash before that reprocesses the request
and produces the same records with the same deterministic ids.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Mapping, MutableMapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from cassandra.cluster import Session

from infra.scheduling import RELEASED_HEADER, ScheduleStore
from infra.tracking import TrackingSettings, rewrite_html
from processors import decisions, metrics
from processors.decisions import Reason, Target
from processors.enrichment import Enricher, UserView, pick_template, retrying
from processors.kafkaio import AsyncProducer
from processors.render import Rendered, RenderError, render
from processors.settings import ProcessorSettings
from schemas import codec, ids
from schemas.channels import Channel, Outcome, PreferenceChannel
from schemas.events import now_ms, status_event, to_ms

log = logging.getLogger(__name__)

REPLAY_HEADER = "herald.replay"
DONE, DEFERRED = "done", "deferred"

# Rate-limit state: "user|category|channel" → {notification_id: counted_at_ms}.
RateTable = MutableMapping[str, Any]


@dataclass(frozen=True)
class Source:
    """Where a record came from, for dead letters."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    headers: Mapping[str, bytes]

    @property
    def position(self) -> str:
        return f"{self.topic}:{self.partition}:{self.offset}"


def _missing_reason(pref: PreferenceChannel, user: UserView) -> str:
    """Why a channel has no address: none stored, or only malformed ones."""
    if pref is PreferenceChannel.PUSH:
        return Reason.INVALID_TOKEN if user.bad_devices else Reason.NO_DEVICE
    bad = user.bad_email if pref is PreferenceChannel.EMAIL else user.bad_phone
    return Reason.INVALID_CONTACT if bad else Reason.NO_CONTACT


class DedupStore:
    """`herald.processed_requests`: event id → done | deferred, kept 7 days (table TTL)."""

    def __init__(self, session: Session, max_backoff_s: float) -> None:
        self._s = session
        self._backoff = max_backoff_s
        self._get = session.prepare(
            "SELECT state, source FROM processed_requests WHERE event_id = ?"
        )
        self._put = session.prepare(
            "INSERT INTO processed_requests (event_id, notification_id, processed_at, state,"
            " source) VALUES (?, ?, ?, ?, ?)"
        )

    async def state(self, event_id: str) -> tuple[str, str | None] | None:
        """(state, record that set it) or None when the event id is new."""
        rows = await retrying(self._s, self._get, (event_id,), max_backoff_s=self._backoff)
        if not rows:
            return None
        # Rows written before the state column existed were finished requests.
        return rows[0]["state"] or DONE, rows[0]["source"]

    async def mark(self, event_id: str, notification_id: str, state: str, source: str) -> None:
        await retrying(
            self._s,
            self._put,
            (event_id, notification_id, datetime.now(UTC), state, source),
            max_backoff_s=self._backoff,
        )


class Processor:
    def __init__(
        self,
        settings: ProcessorSettings,
        *,
        producer: AsyncProducer,
        enricher: Enricher,
        dedup: DedupStore,
        scheduler: ScheduleStore,
    ) -> None:
        self.settings = settings
        self.producer = producer
        self.enricher = enricher
        self.dedup = dedup
        self.scheduler = scheduler
        self.tracking: TrackingSettings = settings.tracking
        # Requests come from other teams' producers: with a registry configured they may be
        # in the Confluent wire format (single-object encoding is read either way).
        self.codec = codec.codec_for(settings.kafka.schema_registry_url)

    # -- output -------------------------------------------------------------------------

    async def _status(
        self,
        req: dict[str, Any],
        outcome: str,
        reason: str | None = None,
        *,
        channel: str | None = None,
    ) -> asyncio.Future[None]:
        # The label keeps the reason's kind only (missing_param, not missing_param:code).
        metrics.DECISIONS.labels(outcome, (reason or "").split(":", 1)[0]).inc()
        ev = status_event(
            notification_id=req["notification_id"],
            event_id=req["event_id"],
            user_id=req["user_id"],
            category=req["category"],
            outcome=outcome,
            reason=reason,
            channel=channel,
            source=req.get("source"),
            trace_id=req.get("trace_id"),
            requested_at=req.get("created_at"),
        )
        return await self.producer.send(
            self.settings.status_topic,
            self.codec.encode(codec.STATUS, ev, topic=self.settings.status_topic),
            key=req["notification_id"].encode(),
        )

    async def dead_letter(self, raw: bytes, src: Source, reason: str) -> None:
        metrics.DLQ.labels(reason.split(":", 1)[0]).inc()
        headers = [(k, v) for k, v in src.headers.items() if not k.startswith("herald.")]
        headers += [
            ("herald.reason", reason.encode()),
            ("herald.original_topic", src.topic.encode()),
            ("herald.original_partition", str(src.partition).encode()),
            ("herald.original_offset", str(src.offset).encode()),
            ("herald.failed_at", str(now_ms()).encode()),
        ]
        log.warning(
            "request dead-lettered",
            extra={"reason": reason, "partition": src.partition, "offset": src.offset},
        )
        await self.producer.send_and_wait(
            self.settings.requested_dlq_topic, raw, key=src.key, headers=headers
        )

    async def _finish(
        self, req: dict[str, Any], pending: list[Awaitable[None]], state: str = DONE
    ) -> None:
        await asyncio.gather(*pending)
        await self.dedup.mark(req["event_id"], req["notification_id"], state, req["_source"])

    # -- the decision chain -------------------------------------------------------------

    async def handle(self, raw: bytes, src: Source, rates: RateTable) -> None:
        started = time.perf_counter()
        metrics.REQUESTS.inc()
        try:
            await self._handle(raw, src, rates)
        finally:
            metrics.LATENCY.observe(time.perf_counter() - started)
            metrics.CACHE_HIT_RATE.set(self.enricher.hit_rate)

    async def _handle(self, raw: bytes, src: Source, rates: RateTable) -> None:
        try:
            req = self.codec.decode(raw, codec.REQUEST)
        except codec.DecodeError as exc:
            await self.dead_letter(raw, src, exc.reason)
            return
        replay = src.headers.get(REPLAY_HEADER) == b"1"
        released = src.headers.get(RELEASED_HEADER) == b"1"
        eid = req["event_id"]
        req["_source"] = src.position

        if not replay:
            seen = await self.dedup.state(eid)
            if seen is not None and seen[1] == src.position:
                # This very record, redelivered after a crash between recording it and
                # committing its offset: its outputs are already written.
                return
            if seen is not None and seen[0] == DONE and released:
                log.info("duplicate release ignored", extra={"event_id": eid})
                return
            if seen is not None and not released:
                await (await self._status(req, Outcome.DROPPED, Reason.DUPLICATE))
                return

        now = now_ms()
        if decisions.expired(to_ms(req["expires_at"]), now):
            await self._finish(req, [await self._status(req, Outcome.DROPPED, Reason.EXPIRED)])
            return
        if not released and decisions.scheduled_for_later(to_ms(req["send_at"]), now):
            await self._hold(req, raw, to_ms(req["send_at"]) or now, Reason.SCHEDULED)
            return

        user = await self.enricher.user(req["user_id"])
        if user is None:
            await self._finish(req, [await self._status(req, Outcome.DROPPED, Reason.UNKNOWN_USER)])
            return

        pending: list[Awaitable[None]] = []
        allowed, drops = self._channels(req, user)
        if allowed and not decisions.is_urgent(req["priority"], req["category"]):
            end = decisions.quiet_window_end(
                datetime.now(UTC), user.timezone, user.quiet_start, user.quiet_end
            )
            if end is not None:
                await self._hold(req, raw, int(end.timestamp() * 1000), Reason.QUIET_HOURS)
                return
        for channel, reason in drops:
            pending.append(await self._status(req, Outcome.DROPPED, reason, channel=channel))
        if not allowed:
            if not drops:
                pending.append(await self._status(req, Outcome.DROPPED, Reason.NO_CHANNEL))
            await self._finish(req, pending)
            return

        locales = decisions.locale_candidates(
            req["locale"], user.locale, self.settings.default_locale
        )
        try:
            rendered = await self._render(req, allowed, locales)
        except RenderError as exc:
            await self.dead_letter(raw, src, exc.reason)
            pending.append(await self._status(req, Outcome.DROPPED, exc.reason))
            await self._finish(req, pending)
            return

        deliveries = 0
        created = now_ms()
        for pref, targets in allowed:
            content = rendered.get(pref)
            if content is None:
                reason = Reason.NO_TEMPLATE if req["template_id"] else Reason.NO_CONTENT
                pending.append(await self._status(req, Outcome.DROPPED, reason, channel=pref))
                continue
            locale, body = content
            for channel in dict.fromkeys(t.channel for t in targets):
                if not self._rate_ok(req, channel, now, rates):
                    pending.append(
                        await self._status(
                            req, Outcome.DROPPED, Reason.RATE_LIMITED, channel=channel
                        )
                    )
                    continue
                for t in (t for t in targets if t.channel == channel):
                    pending.append(await self._deliver(req, t, locale, body, created))
                    deliveries += 1
        if deliveries:
            pending.append(await self._status(req, Outcome.ACCEPTED))
        await self._finish(req, pending)

    def _channels(
        self, req: dict[str, Any], user: UserView
    ) -> tuple[list[tuple[PreferenceChannel, list[Target]]], list[tuple[str, str]]]:
        prefs, platforms = decisions.requested_channels(req["channels"])
        explicit = bool(req["channels"])
        allowed: list[tuple[PreferenceChannel, list[Target]]] = []
        drops: list[tuple[str, str]] = []
        for pref in prefs:
            reason = decisions.opt_out_reason(
                req["category"], pref, user.preferences, unsubscribed_all=user.unsubscribed_all
            )
            if reason is None:
                targets = decisions.targets_for(
                    pref,
                    email=user.email,
                    phone=user.phone,
                    devices=user.devices,
                    push_channels=platforms,
                )
                if targets:
                    allowed.append((pref, targets))
                    continue
                reason = _missing_reason(pref, user)
                if not explicit and reason in (Reason.NO_DEVICE, Reason.NO_CONTACT):
                    continue  # "every channel" means every channel the user can receive
            drops.append((pref.value, reason))
        return allowed, drops

    async def _hold(self, req: dict[str, Any], raw: bytes, due_ms: int, reason: str) -> None:
        held = await self.scheduler.hold(
            event_id=req["event_id"],
            user_id=req["user_id"],
            payload=raw,
            due_at_ms=due_ms,
            reason=reason,
        )
        if held:
            await self._finish(
                req, [await self._status(req, Outcome.DEFERRED, reason)], state=DEFERRED
            )
        else:
            await self._finish(req, [await self._status(req, Outcome.DROPPED, Reason.CANCELED)])

    async def _render(
        self,
        req: dict[str, Any],
        allowed: list[tuple[PreferenceChannel, list[Target]]],
        locales: list[str],
    ) -> dict[str, tuple[str | None, Rendered]]:
        """Content per preference channel, with the locale it was rendered in."""
        out: dict[str, tuple[str | None, Rendered]] = {}
        params = req["params"]
        if req["template_id"]:
            rows = await self.enricher.template(req["template_id"])
            for pref, _targets in allowed:
                row = pick_template(rows, pref, locales)
                if row is not None:
                    # Render only the fields the channel carries: push has no subject or
                    # HTML, SMS only a body.
                    email = pref is PreferenceChannel.EMAIL
                    out[pref] = (
                        row.locale,
                        render(
                            title=row.title if pref is PreferenceChannel.PUSH else None,
                            subject=row.subject if email else None,
                            body=row.body,
                            html=row.html if email else None,
                            params=params,
                        ),
                    )
            return out
        for pref, _targets in allowed:
            c = req["content"].get(pref)
            if c is not None:
                out[pref] = (
                    req["locale"],
                    Rendered(c["title"], c["subject"], c["body"], c["html"]),
                )
        return out

    def _rate_ok(self, req: dict[str, Any], channel: Channel, now: int, rates: RateTable) -> bool:
        cap = self.settings.rate_caps.get(req["category"])
        if cap is None:
            return True
        key = f"{req['user_id']}|{req['category']}|{channel}"
        before = rates.get(key) or {}
        ok, entries = decisions.rate_check(
            before, req["notification_id"], now, cap.limit, cap.window_s
        )
        if entries != before:
            rates[key] = entries  # reassign: Faust only logs changes on __setitem__
        return ok

    async def _deliver(
        self, req: dict[str, Any], t: Target, locale: str | None, body: Rendered, created: int
    ) -> asyncio.Future[None]:
        nid = req["notification_id"]
        did = ids.delivery_id(nid, t.channel, t.target_key)
        html = body.html
        if html is not None and t.channel is Channel.EMAIL:
            html = rewrite_html(
                html,
                delivery_id=did,
                notification_id=nid,
                settings=self.tracking,
                # carried in the token, so open/click events need no lookup to be complete
                user_id=req["user_id"],
                category=req["category"],
                event_id=req["event_id"],
            )
        priority = req["priority"] == "high"
        record = {
            "delivery_id": did,
            "notification_id": nid,
            "event_id": req["event_id"],
            "user_id": req["user_id"],
            "channel": t.channel.value,
            "category": req["category"],
            "priority": req["priority"],
            "device_id": t.device_id,
            "address": t.address,
            "locale": locale,
            "title": body.title,
            "subject": body.subject,
            "body": body.body,
            "html": html,
            "data": dict(req["metadata"]),
            "collapse_key": req["collapse_key"],
            "expires_at": req["expires_at"],
            "attempt": 1,
            "not_before": None,
            "last_error": None,
            "trace_id": req["trace_id"],
            "requested_at": req["created_at"],
            "created_at": created,
        }
        metrics.DELIVERIES.labels(t.channel.value, "priority" if priority else "normal").inc()
        topic = self.settings.channel_topic(t.channel, priority=priority)
        return await self.producer.send(
            topic,
            self.codec.encode(codec.DELIVERY, record, topic=topic),
            key=req["user_id"].encode(),
        )
