"""What the processor does with a batch of request records, from raw bytes to fan-out.

Order of decisions (each drop or deferral writes a status event with its reason):
decode (else request DLQ) → dedup → expired → invalid send time → scheduled for later
(hold) → unknown user → per channel: unsubscribed / opted out / no contact or device →
quiet hours (hold) → render (missing parameter: request DLQ) → per delivery channel:
rate limit → fan out → `accepted`.

A batch pays its I/O once, not per request: one dedup read, one round of user and
template reads for the cache misses, every output produced without an await and acked as
one, one batched dedup write. Event ids are recorded as processed only after every
record of the batch is acknowledged by Kafka, so a crash before that reprocesses the
batch and produces the same records with the same deterministic ids.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from cassandra.cluster import Session
from cassandra.query import BatchStatement, BatchType
from confluent_kafka import KafkaException

from infra import cql_bind
from infra.cassandra import prepare_lookup
from infra.kafka_producer import AsyncProducer, Batch, is_permanent
from infra.links import LIST_UNSUBSCRIBE, add_footer
from infra.scheduling import ScheduleStore
from processors import decisions, digests, metrics
from processors.decisions import Reason, Target
from processors.enrichment import (
    Enricher,
    TemplateRow,
    UserView,
    chunks,
    pick_template,
    retrying,
)
from processors.render import Rendered, RenderError, render
from processors.settings import ProcessorSettings
from processors.tracking import TrackingSettings, rewrite_html
from schemas import codec, ids
from schemas.channels import Channel, Outcome, PreferenceChannel
from schemas.contract import Header
from schemas.errors import HeraldError
from schemas.events import now_ms, status_event, to_ms

log = logging.getLogger(__name__)

DONE, DEFERRED = "done", "deferred"
# A dead letter keeps at most this much of a request too large to copy whole.
TRUNCATED_BYTES = 64 * 1024

# Rate-limit state: "user|category|channel" → {notification_id: counted_at_ms}.
RateTable = MutableMapping[str, Any]
# Digest state: "user|key" → entry (processors.digests).
DigestTable = MutableMapping[str, Any]
# (state, record that set it) per event id already processed.
Seen = dict[str, tuple[str, str | None]]


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


@dataclass(frozen=True)
class Incoming:
    """One consumed request record; `event` is the framework's handle for it (table writes)."""

    raw: bytes
    src: Source
    event: Any = None

    @property
    def replay(self) -> bool:
        return self.src.headers.get(Header.REPLAY) == b"1"

    @property
    def released(self) -> bool:
        return self.src.headers.get(Header.RELEASED) == b"1"


@dataclass
class _Decision:
    """What one request leads to; nothing is written until the whole batch is decided."""

    records: list[tuple[str, bytes, bytes]] = field(default_factory=list)  # topic, key, value
    mark: str | None = None  # the dedup state to record, None: record nothing
    hold: tuple[int, str] | None = None  # (due ms, reason): held by the scheduler
    dead_letter: str | None = None  # reason: the raw request goes to the request DLQ


@dataclass
class PendingBatch:
    """A batch decided and its outputs queued, not yet acked or recorded."""

    plans: list[tuple[Incoming, dict[str, Any], _Decision]]
    undecodable: list[tuple[Incoming, str]]
    out: Batch
    refused: set[int]  # indexes into `plans` librdkafka refused at once
    marks: list[tuple[str, str, str, str]]  # (event id, notification id, state, source)
    started: float


class TooLarge(HeraldError):
    """A record of the fan-out is over `max_record_bytes`: Kafka would refuse it forever."""


# Channels whose messages carry a title: push notifications and in-app items.
_TITLED = frozenset({PreferenceChannel.PUSH, PreferenceChannel.INAPP})


def _has_inapp(req: dict[str, Any], templates: Mapping[str, tuple[TemplateRow, ...]]) -> bool:
    """Whether the request has content meant for the in-app feed itself."""
    if req["template_id"]:
        rows = templates.get(req["template_id"], ())
        return any(r.channel == PreferenceChannel.INAPP for r in rows)
    return PreferenceChannel.INAPP in req["content"]


def _missing_reason(pref: PreferenceChannel, user: UserView) -> str:
    """Why a channel has no address: none stored, or only malformed ones."""
    if pref is PreferenceChannel.PUSH:
        return Reason.INVALID_TOKEN if user.bad_devices else Reason.NO_DEVICE
    bad = user.bad_email if pref is PreferenceChannel.EMAIL else user.bad_phone
    return Reason.INVALID_CONTACT if bad else Reason.NO_CONTACT


class DedupStore:
    """`herald.processed_requests`: event id → done | deferred, kept 7 days (table TTL).

    Read with one IN query per chunk of ids and written with one unlogged batch per chunk:
    the per-statement cost of the driver (~0.4 ms of CPU) would otherwise dominate.
    """

    def __init__(self, session: Session, max_backoff_s: float) -> None:
        self._s = session
        self._backoff = max_backoff_s
        self._get = prepare_lookup(
            session, "SELECT event_id, state, source FROM processed_requests WHERE event_id IN ?"
        )
        self._put = session.prepare(
            "INSERT INTO processed_requests (event_id, notification_id, processed_at, state,"
            " source) VALUES (?, ?, ?, ?, ?)"
        )

    async def states(self, event_ids: set[str]) -> Seen:
        """(state, record that set it) of every event id already processed."""
        keys = list(event_ids)
        parts = await asyncio.gather(
            *(
                retrying(self._s, self._get, (chunk,), max_backoff_s=self._backoff)
                for chunk in chunks(keys)
            )
        )
        # Rows written before the state column existed were finished requests.
        return {r["event_id"]: (r["state"] or DONE, r["source"]) for part in parts for r in part}

    async def mark(self, rows: Sequence[tuple[str, str, str, str]]) -> None:
        """Record (event id, notification id, state, source) of every finished request."""
        now = datetime.now(UTC)
        batches = []
        for chunk in chunks(list(rows)):
            batch = BatchStatement(batch_type=BatchType.UNLOGGED)
            for event_id, nid, state, source in chunk:
                cql_bind.add(batch, self._put, (event_id, nid, now, state, source))
            batches.append(batch)
        await asyncio.gather(
            *(retrying(self._s, b, None, max_backoff_s=self._backoff) for b in batches)
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
        # Event id → (state, source) decided by a batch whose ids are not recorded yet.
        self.pending_marks: dict[str, tuple[str, str]] = {}
        self.tracking: TrackingSettings = settings.tracking
        # Requests come from other teams' producers: with a registry configured they may be
        # in the Confluent wire format (single-object encoding is read either way).
        self.codec = codec.codec_for(settings.kafka.schema_registry_url)

    @classmethod
    def from_settings(
        cls, settings: ProcessorSettings, session: Session, producer: AsyncProducer
    ) -> Processor:
        return cls(
            settings,
            producer=producer,
            enricher=Enricher(
                session,
                ttl_s=settings.cache_ttl_s,
                max_entries=settings.cache_max_entries,
                max_backoff_s=settings.cassandra_retry_max_s,
            ),
            dedup=DedupStore(session, settings.cassandra_retry_max_s),
            scheduler=ScheduleStore(session, scope=settings.requested_topic),
        )

    # -- the batch ----------------------------------------------------------------------

    async def handle_batch(
        self,
        batch: Sequence[Incoming],
        rates: RateTable,
        enter: Callable[[Incoming], None] | None = None,
        digest_table: DigestTable | None = None,
        tables_durable: Callable[[], Awaitable[None]] | None = None,
        tables_send: Callable[[], None] | None = None,
    ) -> None:
        """Decide every record of `batch`, in order; return once every output is acked by
        Kafka and every decided event id is recorded. `enter` is called before each record
        is decided (the rate and digest tables need to know whose partition they write
        to). Without `digest_table`, requests naming a digest are sent on their own.

        `tables_send` (the tables' changelog records queued on the producer) is called as
        the outputs are queued, so both share the producer's linger; `tables_durable` (the
        tables' changelog flush) is awaited before the event ids are
        recorded: a record redelivered after a crash is skipped once its id is recorded
        at its position, so by then every output of it must be durable, a digest item
        added to its table included.

        Raises on an infrastructure failure (Kafka or Cassandra): the caller retries the
        whole batch, which produces the same records with the same ids.
        """
        pending = await self.prepare_batch(batch, rates, enter, digest_table, tables_send)
        try:
            await self.complete_batch(pending, tables_durable)
        except BaseException:
            self.forget(pending)  # decided again from scratch by the caller's retry
            raise

    async def prepare_batch(
        self,
        batch: Sequence[Incoming],
        rates: RateTable,
        enter: Callable[[Incoming], None] | None = None,
        digest_table: DigestTable | None = None,
        tables_send: Callable[[], None] | None = None,
    ) -> PendingBatch:
        """The first half of `handle_batch`: read, decide, queue every output. Its event
        ids count as processed for the batches decided after it (`pending_marks`) until
        `complete_batch` has recorded them, or `forget` drops them."""
        started = time.perf_counter()
        metrics.REQUESTS.inc(len(batch))
        decoded: list[tuple[Incoming, dict[str, Any]]] = []
        undecodable: list[tuple[Incoming, str]] = []
        for inc in batch:
            try:
                req = self.codec.decode(inc.raw, codec.REQUEST)
            except codec.DecodeError as exc:
                undecodable.append((inc, exc.reason))
                continue
            req["_source"] = inc.src.position
            decoded.append((inc, req))

        eids = {r["event_id"] for i, r in decoded if not i.replay}
        seen = await self.dedup.states(eids)
        # A batch still completing has not recorded its ids yet: its decisions count.
        seen.update((e, self.pending_marks[e]) for e in eids & self.pending_marks.keys())
        users = await self.enricher.users({r["user_id"] for _i, r in decoded})
        templates = await self.enricher.templates(
            {r["template_id"] for _i, r in decoded if r["template_id"]}
        )

        now, wall = now_ms(), datetime.now(UTC)
        plans: list[tuple[Incoming, dict[str, Any], _Decision]] = []
        for inc, req in decoded:
            if enter is not None:
                enter(inc)
            try:
                d = self._decide(inc, req, seen, users, templates, rates, now, wall, digest_table)
            except TooLarge:
                d = self._refused(req, Reason.TOO_LARGE)
            except Exception as exc:  # a bug or a poison value: deterministic, never retried
                log.exception("request failed", extra={"position": inc.src.position})
                d = _Decision(dead_letter=f"processing_error:{type(exc).__name__}")
            if d.mark is not None:
                # A later copy of the event id in this very batch is its duplicate.
                seen[req["event_id"]] = (d.mark, req["_source"])
            plans.append((inc, req, d))

        await self._hold_all(plans)
        out = self.producer.batch()
        refused = self._send(out, plans, undecodable)
        if tables_send is not None:
            tables_send()
        marks = [
            (req["event_id"], req["notification_id"], d.mark, req["_source"])
            for _inc, req, d in plans
            if d.mark is not None
        ]
        for eid, _nid, mark, position in marks:
            self.pending_marks[eid] = (mark, position)
        return PendingBatch(plans, undecodable, out, refused, marks, started)

    async def complete_batch(
        self,
        pending: PendingBatch,
        tables_durable: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        """The second half of `handle_batch`: wait for the outputs' acks, dead-letter what
        Kafka refused, then record the event ids. On an exception the batch's ids stay in
        `pending_marks` (the caller decides when to `forget` them)."""
        plans, out = pending.plans, pending.out
        await out.wait()
        refused = pending.refused | _refused_by_broker(out)
        if refused:
            # Nothing can make Kafka take these records: the request is dead-lettered instead.
            retry = self.producer.batch()
            for idx in sorted(refused):
                inc, req, _d = plans[idx]
                plans[idx] = (inc, req, self._refused(req, Reason.TOO_LARGE))
            if self._send(retry, [plans[i] for i in sorted(refused)], []):
                raise KafkaException("a dead letter or status refused by librdkafka")
            await retry.wait()
            if _refused_by_broker(retry):
                raise KafkaException("dead letters refused by the broker")
        for inc, _req, d in plans:
            if d.dead_letter is not None:
                self._log_dead_letter(inc.src, d.dead_letter)
        for inc, reason in pending.undecodable:
            self._log_dead_letter(inc.src, reason)
        if tables_durable is not None:
            await tables_durable()
        await self.dedup.mark(pending.marks)
        self.forget(pending)
        metrics.LATENCY.observe(time.perf_counter() - pending.started)
        metrics.CACHE_HIT_RATE.set(self.enricher.hit_rate)

    def forget(self, pending: PendingBatch) -> None:
        """Drop the batch's ids from `pending_marks` (recorded, or to be decided again)."""
        for eid, _nid, mark, position in pending.marks:
            if self.pending_marks.get(eid) == (mark, position):
                del self.pending_marks[eid]

    def _send(
        self,
        out: Batch,
        plans: Sequence[tuple[Incoming, dict[str, Any], _Decision]],
        undecodable: Sequence[tuple[Incoming, str]],
    ) -> set[int]:
        """Queue every output; the indexes of requests whose records librdkafka refused."""
        refused: set[int] = set()
        for idx, (inc, _req, d) in enumerate(plans):
            try:
                for topic, key, value in d.records:
                    out.send(topic, value, key=key, tag=idx)
            except KafkaException as exc:
                if not is_permanent(exc.args[0]):
                    raise
                refused.add(idx)
                continue
            if d.dead_letter is not None:
                self._dead_letter(out, inc, d.dead_letter)
        for inc, reason in undecodable:
            self._dead_letter(out, inc, reason)
        return refused

    def _refused(self, req: dict[str, Any], reason: str) -> _Decision:
        d = _Decision(mark=DONE, dead_letter=reason)
        d.records.append(self._status(req, Outcome.DROPPED, reason))
        return d

    async def _hold_all(self, plans: list[tuple[Incoming, dict[str, Any], _Decision]]) -> None:
        held = [(inc, req, d) for inc, req, d in plans if d.hold is not None]
        if not held:
            return
        results = await asyncio.gather(
            *(
                self.scheduler.hold(
                    event_id=req["event_id"],
                    user_id=req["user_id"],
                    payload=inc.raw,
                    due_at_ms=d.hold[0],
                    reason=d.hold[1],
                )
                for inc, req, d in held
                if d.hold is not None
            )
        )
        for (_inc, req, d), ok in zip(held, results, strict=True):
            assert d.hold is not None
            if ok:
                d.records.append(self._status(req, Outcome.DEFERRED, d.hold[1]))
                d.mark = DEFERRED
            else:
                d.records.append(self._status(req, Outcome.DROPPED, Reason.CANCELED))
                d.mark = DONE

    # -- digests ------------------------------------------------------------------------

    async def emit_digests(
        self,
        digest_table: DigestTable,
        owned: Callable[[int], bool],
        enter: Callable[[int], None],
    ) -> int:
        """Publish every due digest of the partitions this worker owns to the request
        topic, then clear their windows; returns how many were published. The caller makes
        the table's changelog durable (flush) before it acks anything else.

        A crash between publishing and clearing publishes the same event ids again on
        restart; the processor's dedup drops the copies.
        """
        now = now_ms()
        due: list[tuple[str, dict[str, Any]]] = []
        spent: list[tuple[str, int]] = []
        for tkey, entry in list(digest_table.items()):
            if not owned(entry["p"]):
                continue
            if digests.is_due(entry, now):
                due.append((tkey, entry))
            elif digests.is_spent(entry, now):
                spent.append((tkey, entry["p"]))
        if due:
            out = self.producer.batch()
            topic = self.settings.requested_topic
            for _tkey, entry in due:
                value = self.codec.encode(codec.REQUEST, digests.request(entry, now), topic=topic)
                out.send(topic, value, key=entry["user"].encode())
            await out.wait()
            if out.failed:
                raise KafkaException(f"digests not published: {out.failed[0][1]}")
            for tkey, entry in due:
                enter(entry["p"])
                digest_table[tkey] = digests.after_emit(
                    entry,
                    now,
                    self.settings.digest_keep_prev_s,
                    self.settings.digest_max_items,
                    self.settings.digest_max_ids,
                )
                metrics.DIGESTS.inc()
        for tkey, partition in spent:
            enter(partition)
            del digest_table[tkey]
        return len(due)

    # -- output -------------------------------------------------------------------------

    def _status(
        self,
        req: dict[str, Any],
        outcome: str,
        reason: str | None = None,
        *,
        channel: str | None = None,
    ) -> tuple[str, bytes, bytes]:
        # The label keeps the reason's kind only (missing_param, not missing_param:code).
        metrics.decision(outcome, (reason or "").split(":", 1)[0]).inc()
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
        topic = self.settings.status_topic
        return (
            topic,
            req["notification_id"].encode(),
            self.codec.encode(codec.STATUS, ev, topic=topic),
        )

    def _dead_letter(self, out: Batch, inc: Incoming, reason: str) -> None:
        src = inc.src
        metrics.DLQ.labels(reason.split(":", 1)[0]).inc()
        headers = [(k, v) for k, v in src.headers.items() if not k.startswith("herald.")]
        headers += [
            (Header.REASON, reason.encode()),
            (Header.ORIGINAL_TOPIC, src.topic.encode()),
            (Header.ORIGINAL_PARTITION, str(src.partition).encode()),
            (Header.ORIGINAL_OFFSET, str(src.offset).encode()),
            (Header.FAILED_AT, str(now_ms()).encode()),
        ]
        topic = self.settings.requested_dlq_topic
        if len(inc.raw) <= self.settings.max_record_bytes:
            try:
                out.send(topic, inc.raw, key=src.key, headers=headers)
                return
            except KafkaException as exc:
                if not is_permanent(exc.args[0]):
                    raise
        # The whole record cannot be copied; its position says where the rest is.
        headers.append((Header.TRUNCATED_FROM, str(len(inc.raw)).encode()))
        out.send(topic, inc.raw[:TRUNCATED_BYTES], key=src.key, headers=headers)

    def _log_dead_letter(self, src: Source, reason: str) -> None:
        log.warning(
            "request dead-lettered",
            extra={"reason": reason, "partition": src.partition, "offset": src.offset},
        )

    # -- the decision chain -------------------------------------------------------------

    def _decide(
        self,
        inc: Incoming,
        req: dict[str, Any],
        seen: Seen,
        users: Mapping[str, UserView | None],
        templates: Mapping[str, tuple[TemplateRow, ...]],
        rates: RateTable,
        now: int,
        wall: datetime,
        digest_table: DigestTable | None = None,
    ) -> _Decision:
        d = _Decision()
        eid = req["event_id"]
        if not inc.replay:
            state = seen.get(eid)
            if state is not None and state[1] == inc.src.position:
                # This very record, redelivered after a crash between recording it and
                # committing its offset: its outputs are already written.
                return d
            if state is not None and state[0] == DONE and inc.released:
                log.info("duplicate release ignored", extra={"event_id": eid})
                return d
            if state is not None and not inc.released:
                d.records.append(self._status(req, Outcome.DROPPED, Reason.DUPLICATE))
                return d

        d.mark = DONE
        send_at = to_ms(req["send_at"])
        if decisions.expired(to_ms(req["expires_at"]), now):
            d.records.append(self._status(req, Outcome.DROPPED, Reason.EXPIRED))
            return d
        if decisions.invalid_send_at(send_at):
            d.records.append(self._status(req, Outcome.DROPPED, Reason.INVALID_SEND_AT))
            return d
        if not inc.released and decisions.scheduled_for_later(send_at, now):
            d.hold = (send_at or now, Reason.SCHEDULED)
            return d

        user = users.get(req["user_id"])
        if user is None:
            d.records.append(self._status(req, Outcome.DROPPED, Reason.UNKNOWN_USER))
            return d

        spec = self._digest_spec(req, templates) if digest_table is not None else None
        if spec is not None and digest_table is not None:
            # Opt-outs, quiet hours and caps are decided when the digest itself is sent.
            key, window_s, template_id = spec
            tkey = digests.table_key(req["user_id"], key)
            entry, changed = digests.add(
                digest_table.get(tkey),
                req["user_id"],
                key,
                inc.src.partition,
                digests.item_of(req, window_s, template_id),
                now,
                self.settings.digest_max_items,
                self.settings.digest_max_ids,
            )
            if changed:
                digest_table[tkey] = entry  # reassign: Faust only logs changes on __setitem__
            d.records.append(self._status(req, Outcome.DIGESTED, key))
            return d

        req["_inapp"] = _has_inapp(req, templates)
        allowed, drops = self._channels(req, user)
        if allowed and not decisions.is_urgent(req["priority"], req["category"]):
            end = decisions.quiet_window_end(wall, user.timezone, user.quiet_start, user.quiet_end)
            if end is not None:
                d.hold = (int(end.timestamp() * 1000), Reason.QUIET_HOURS)
                return d
        for channel, reason in drops:
            d.records.append(self._status(req, Outcome.DROPPED, reason, channel=channel))
        if not allowed:
            if not drops:
                d.records.append(self._status(req, Outcome.DROPPED, Reason.NO_CHANNEL))
            return d

        locales = decisions.locale_candidates(
            req["locale"], user.locale, self.settings.default_locale
        )
        try:
            rendered = self._render(req, allowed, locales, templates)
        except RenderError as exc:
            d.dead_letter = exc.reason
            d.records.append(self._status(req, Outcome.DROPPED, exc.reason))
            return d

        deliveries = 0
        created = now_ms()
        for pref, targets in allowed:
            content = rendered.get(pref)
            if content is None:
                reason = Reason.NO_TEMPLATE if req["template_id"] else Reason.NO_CONTENT
                d.records.append(self._status(req, Outcome.DROPPED, reason, channel=pref))
                continue
            locale, body = content
            for channel in dict.fromkeys(t.channel for t in targets):
                if not self._rate_ok(req, channel, now, rates):
                    d.records.append(
                        self._status(req, Outcome.DROPPED, Reason.RATE_LIMITED, channel=channel)
                    )
                    continue
                for t in (t for t in targets if t.channel == channel):
                    d.records.append(self._deliver(req, t, locale, body, created))
                    deliveries += 1
        if deliveries:
            d.records.append(self._status(req, Outcome.ACCEPTED))
        return d

    def _digest_spec(
        self, req: dict[str, Any], templates: Mapping[str, tuple[TemplateRow, ...]]
    ) -> tuple[str, int, str | None] | None:
        """(key, window seconds, template) when the request is to wait in a digest: the one
        it names, else the one its template declares. Urgent requests never wait, and a
        digest being sent is not collected again."""
        if decisions.is_urgent(req["priority"], req["category"]):
            return None
        if digests.DIGEST_META in req["metadata"]:
            return None
        spec = req.get("digest")
        if spec is not None:
            return spec["key"], max(1, int(spec["window_s"])), spec["template_id"]
        for row in templates.get(req["template_id"] or "", ()):
            if row.digest_key and row.digest_window_s:
                return row.digest_key, max(1, row.digest_window_s), row.digest_template
        return None

    def _channels(
        self, req: dict[str, Any], user: UserView
    ) -> tuple[list[tuple[PreferenceChannel, list[Target]]], list[tuple[str, str]]]:
        prefs, platforms = decisions.requested_channels(req["channels"])
        explicit = bool(req["channels"])
        allowed: list[tuple[PreferenceChannel, list[Target]]] = []
        drops: list[tuple[str, str]] = []
        for pref in prefs:
            if pref is PreferenceChannel.INAPP and not explicit and not req.get("_inapp"):
                # Every user has a feed: "every channel" puts a request in it only when
                # the request (or its template) has in-app content of its own.
                continue
            reason = decisions.opt_out_reason(
                req["category"], pref, user.preferences, unsubscribed_all=user.unsubscribed_all
            )
            if reason is None:
                targets = decisions.targets_for(
                    pref,
                    # Only the contact this channel uses: each is validated on first use.
                    email=user.email if pref is PreferenceChannel.EMAIL else None,
                    phone=user.phone if pref is PreferenceChannel.SMS else None,
                    devices=user.devices,
                    push_channels=platforms,
                    user_id=req["user_id"],
                )
                if targets:
                    allowed.append((pref, targets))
                    continue
                reason = _missing_reason(pref, user)
                if not explicit and reason in (Reason.NO_DEVICE, Reason.NO_CONTACT):
                    continue  # "every channel" means every channel the user can receive
            drops.append((pref.value, reason))
        return allowed, drops

    def _render(
        self,
        req: dict[str, Any],
        allowed: list[tuple[PreferenceChannel, list[Target]]],
        locales: list[str],
        templates: Mapping[str, tuple[TemplateRow, ...]],
    ) -> dict[str, tuple[str | None, Rendered]]:
        """Content per preference channel, with the locale it was rendered in."""
        out: dict[str, tuple[str | None, Rendered]] = {}
        params = req["params"]
        context = digests.render_context(req["metadata"])
        if context is not None:
            params = {**params, **context}
        if req["template_id"]:
            rows = templates.get(req["template_id"], ())
            for pref, _targets in allowed:
                row = pick_template(rows, pref, locales)
                if row is None and pref is PreferenceChannel.INAPP:
                    row = pick_template(rows, PreferenceChannel.PUSH, locales)
                if row is not None:
                    # Render only the fields the channel carries: push has no subject or
                    # HTML, SMS only a body.
                    email = pref is PreferenceChannel.EMAIL
                    out[pref] = (
                        row.locale,
                        render(
                            title=row.title if pref in _TITLED else None,
                            subject=row.subject if email else None,
                            body=row.body,
                            html=row.html if email else None,
                            params=params,
                        ),
                    )
            return out
        for pref, _targets in allowed:
            c = req["content"].get(pref)
            if c is None and pref is PreferenceChannel.INAPP:
                c = req["content"].get(PreferenceChannel.PUSH)
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

    def _deliver(
        self, req: dict[str, Any], t: Target, locale: str | None, body: Rendered, created: int
    ) -> tuple[str, bytes, bytes]:
        nid = req["notification_id"]
        did = ids.delivery_id(nid, t.channel, t.target_key)
        html, text, data = body.html, body.body, dict(req["metadata"])
        data.pop(LIST_UNSUBSCRIBE, None)  # herald's to set, never a producer's
        data.pop(digests.DIGEST_META, None)  # rendered into the text, no use on a device
        if t.channel is Channel.EMAIL and not decisions.is_mandatory(req["category"]):
            html, text, data[LIST_UNSUBSCRIBE] = add_footer(
                html, text, req["user_id"], req["category"], self.settings.links
            )
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
            "body": text,
            "html": html,
            "data": data,
            "collapse_key": req["collapse_key"],
            "expires_at": req["expires_at"],
            "attempt": 1,
            "not_before": None,
            "last_error": None,
            "trace_id": req["trace_id"],
            "requested_at": req["created_at"],
            "created_at": created,
        }
        topic = self.settings.channel_topic(t.channel, priority=priority)
        value = self.codec.encode(codec.DELIVERY, record, topic=topic)
        if len(value) > self.settings.max_record_bytes:
            raise TooLarge(did)
        metrics.delivery(t.channel.value, "priority" if priority else "normal").inc()
        return topic, req["user_id"].encode(), value


def _refused_by_broker(out: Batch) -> set[int]:
    """Indexes of requests whose records the broker refused for good; raises when a refusal
    may pass (the batch is then retried whole)."""
    refused: set[int] = set()
    for tag, err in out.failed:
        if not is_permanent(err) or not isinstance(tag, int):
            raise KafkaException(err)
        refused.add(tag)
    return refused
