"""Load generation: a synthetic user base in Cassandra and a request stream with the seed's mix.

The seed sizes herald for 10M push, 1M SMS and 5M email a day; requests pick their channel
with those weights. Users own 0 to 3 devices, about 10% have opted out of something, and
every category has a template per locale and channel, so the processor does its full work
(user, devices, preferences and template reads, rendering, fan-out) for every request.
"""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from cassandra.cluster import Session
from cassandra.concurrent import execute_concurrent_with_args

from schemas import codec, ids
from schemas.channels import Category, Platform, PreferenceChannel
from schemas.events import now_ms

DAILY_VOLUME: dict[PreferenceChannel, int] = {
    PreferenceChannel.PUSH: 10_000_000,
    PreferenceChannel.SMS: 1_000_000,
    PreferenceChannel.EMAIL: 5_000_000,
}
LOCALES = ("en", "ko-KR", "de")
TIMEZONES = ("UTC", "Asia/Seoul", "Europe/Berlin", "America/New_York")
# Share of requests per category; security is mandatory, so opt-outs never drop it.
CATEGORY_WEIGHTS: dict[str, float] = {
    Category.TRANSACTIONAL: 0.5,
    Category.MARKETING: 0.3,
    Category.SOCIAL: 0.15,
    Category.SECURITY: 0.05,
}
# Web push is optional in herald; the default mix uses the two mobile platforms.
DEFAULT_PLATFORMS: tuple[Platform, ...] = (Platform.IOS, Platform.ANDROID)
OPT_OUT_SHARE = 0.10

_TEMPLATE_TEXT: dict[str, tuple[str, str]] = {
    # locale → (title/subject, body), both with the parameters `name` and `ref`
    "en": ("Hello {{ name }}", "Hi {{ name }}, your update {{ ref }} is ready."),
    "ko-KR": ("{{ name }}님 안녕하세요", "{{ name }}님, 요청하신 {{ ref }} 건이 준비되었습니다."),
    "de": ("Hallo {{ name }}", "Hallo {{ name }}, deine Nachricht {{ ref }} ist da."),
}


def channel_weights() -> dict[PreferenceChannel, float]:
    total = sum(DAILY_VOLUME.values())
    return {ch: n / total for ch, n in DAILY_VOLUME.items()}


def template_id(category: str) -> str:
    return f"bench.{category}"


@dataclass(frozen=True)
class Device:
    device_id: str
    platform: Platform
    token: str


@dataclass(frozen=True)
class User:
    user_id: str
    email: str
    phone: str
    locale: str
    timezone: str
    devices: tuple[Device, ...]
    opt_outs: tuple[tuple[PreferenceChannel, str], ...]  # (channel, category or "*")


def _token(platform: Platform, rng: random.Random) -> str:
    if platform is Platform.IOS:
        return f"{rng.getrandbits(256):064x}"  # APNs: 32 bytes, hex
    alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_"
    # FCM registration tokens: "<instance id>:<140-odd url-safe chars>"
    head = "".join(rng.choice(alphabet) for _ in range(22))
    return head + ":APA91b" + "".join(rng.choice(alphabet) for _ in range(134))


def make_users(
    count: int,
    *,
    prefix: str,
    seed: int = 7,
    platforms: Sequence[Platform] = DEFAULT_PLATFORMS,
    devices_per_user: tuple[int, int] = (0, 3),
    opt_out_share: float = OPT_OUT_SHARE,
) -> list[User]:
    rng = random.Random(seed)
    users = []
    for i in range(count):
        user_id = f"{prefix}-{i:07d}"
        devices = tuple(
            Device(str(uuid.UUID(int=rng.getrandbits(128))), p, _token(p, rng))
            for p in (rng.choice(platforms) for _ in range(rng.randint(*devices_per_user)))
        )
        opt_outs: tuple[tuple[PreferenceChannel, str], ...] = ()
        if rng.random() < opt_out_share:
            ch = rng.choice(list(PreferenceChannel))
            opt_outs = ((ch, rng.choice(["*", str(Category.MARKETING)])),)
        users.append(
            User(
                user_id=user_id,
                email=f"bench.{i}@example.com",
                phone=f"+1202555{i % 10_000:04d}",
                locale=rng.choice(LOCALES),
                timezone=rng.choice(TIMEZONES),
                devices=devices,
                opt_outs=opt_outs,
            )
        )
    return users


_USER_COLUMNS = (
    "user_id",
    "email",
    "phone",
    "locale",
    "timezone",
    "unsubscribed_all",
    "updated_at",
)
_DEVICE_COLUMNS = ("user_id", "device_id", "platform", "device_token", "app_id", "created_at")
_TEMPLATE_COLUMNS = (
    "template_id",
    "locale",
    "channel",
    "subject",
    "title",
    "body",
    "html",
    "updated_at",
)


def seed_cassandra(
    session: Session,
    users: Sequence[User],
    *,
    keyspace: str = "herald",
    categories: Iterable[str] = tuple(CATEGORY_WEIGHTS),
    concurrency: int = 64,
) -> dict[str, int]:
    """Write users, devices, opt-outs and templates straight into Cassandra (idempotent)."""
    now = datetime.now(UTC)
    user_rows = [(u.user_id, u.email, u.phone, u.locale, u.timezone, False, now) for u in users]
    device_rows = [
        (u.user_id, d.device_id, str(d.platform), d.token, "herald.bench", now)
        for u in users
        for d in u.devices
    ]
    pref_rows = [(u.user_id, str(ch), cat, False, now) for u in users for ch, cat in u.opt_outs]
    template_rows = []
    for category in categories:
        tid = template_id(category)
        for locale, (title, body) in _TEMPLATE_TEXT.items():
            html = f'<p>{body}</p><p><a href="https://example.com/r/{{{{ ref }}}}">Open</a></p>'
            template_rows += [
                (tid, locale, "push", None, title, body, None, now),
                (tid, locale, "sms", None, None, body, None, now),
                (tid, locale, "email", title, None, body, html, now),
            ]
    tables: list[tuple[str, tuple[str, ...], list[tuple[Any, ...]]]] = [
        ("users", _USER_COLUMNS, user_rows),
        ("devices_by_user", _DEVICE_COLUMNS, device_rows),
        ("preferences", ("user_id", "channel", "category", "opt_in", "updated_at"), pref_rows),
        ("templates", _TEMPLATE_COLUMNS, template_rows),
    ]
    for table, columns, rows in tables:
        prepared = session.prepare(
            f"INSERT INTO {keyspace}.{table} ({', '.join(columns)})"
            f" VALUES ({', '.join('?' * len(columns))})"
        )
        for ok, result in execute_concurrent_with_args(
            session, prepared, rows, concurrency=concurrency, raise_on_first_error=True
        ):
            if not ok:
                raise RuntimeError(f"seeding {table} failed: {result}")
    return {
        "users": len(user_rows),
        "devices": len(device_rows),
        "opt_outs": len(pref_rows),
        "templates": len(template_rows),
    }


@dataclass
class RequestMix:
    users: Sequence[User]
    source: str = "herald.bench"
    seed: int = 11
    weights: dict[PreferenceChannel, float] = field(default_factory=channel_weights)

    def requests(self, count: int, *, run_id: str) -> Iterator[dict[str, Any]]:
        """`count` NotificationRequest records; `created_at` is set when each is published."""
        rng = random.Random(self.seed)
        channels = list(self.weights)
        channel_w = [self.weights[c] for c in channels]
        categories = list(CATEGORY_WEIGHTS)
        category_w = [CATEGORY_WEIGHTS[c] for c in categories]
        for i in range(count):
            user = rng.choice(self.users)
            channel = rng.choices(channels, channel_w)[0]
            category = rng.choices(categories, category_w)[0]
            event_id = f"{run_id}-{i:08d}"
            yield {
                "event_id": event_id,
                "notification_id": ids.notification_id(event_id),
                "source": self.source,
                "user_id": user.user_id,
                "category": str(category),
                "priority": "normal",
                "channels": [str(channel)],
                "template_id": template_id(category),
                "params": {"name": f"User {i % 997}", "ref": f"R{i:08d}"},
                "content": {},
                "locale": None,
                "send_at": None,
                "expires_at": None,
                "collapse_key": None,
                "trace_id": None,
                "metadata": {"bench_run": run_id},
                "created_at": 0,
            }


class Pacer:
    """Spaces out events to a fixed offered rate; rate <= 0 means as fast as possible."""

    def __init__(self, rate: float) -> None:
        self.interval = 1.0 / rate if rate > 0 else 0.0
        self.start = time.monotonic()
        self.sent = 0

    def wait(self) -> None:
        self.sent += 1
        if not self.interval:
            return
        due = self.start + self.sent * self.interval
        delay = due - time.monotonic()
        if delay > 0.002:  # sleeping less than the timer's grain only adds jitter
            time.sleep(delay)


def publish(
    producer: Any,
    topic: str,
    records: Iterator[dict[str, Any]],
    *,
    values: codec.Codec,
    rate: float,
    on_published: Callable[[dict[str, Any]], None] = lambda _r: None,
) -> int:
    """Encode and publish every record at `rate`/s with key = user id; returns the count.

    `created_at` is stamped just before encoding: it is the publish instant that latency is
    measured from.
    """
    pacer = Pacer(rate)
    n = 0
    for record in records:
        pacer.wait()
        record["created_at"] = now_ms()
        value = values.encode(codec.REQUEST, record, topic=topic)
        while True:
            try:
                producer.produce(topic, value=value, key=record["user_id"].encode())
                break
            except BufferError:
                producer.poll(0.05)  # local queue full: let deliveries drain
        producer.poll(0)
        on_published(record)
        n += 1
    producer.flush(60)
    return n
