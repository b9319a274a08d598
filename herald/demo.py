"""`make demo` / `herald demo`: the whole pipeline on this machine, with a realistic batch.

Starts (or reuses) Kafka and Cassandra, starts the provider emulators, the processor and
the senders as separate processes, seeds a handful of users through the contacts API,
publishes a batch through the producer library, then prints what each emulator received
and what was dropped, deferred or collected into a digest, and why; then reads one user's
in-app inbox through the send API, as an app would with a user token.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import typer
from cassandra.cluster import Session
from confluent_kafka import OFFSET_END, Consumer, TopicPartition
from rich.console import Console
from rich.table import Table

from herald.bench.services import Pipeline
from herald.services import Service, ServiceSpec, free_port, python_module, start
from infra import topics
from infra.cassandra import connect
from infra.settings import DEV_PROFILE, CassandraSettings, KafkaSettings
from producers.clients import ClientStore
from producers.contacts import SyncDirectory
from producers.publisher import AsyncPublisher, Publisher
from producers.request import Content, Digest, NotificationRequest
from schemas import codec
from schemas.templating import DIGEST_NAMES, Variant, used_params

app = typer.Typer()
console = Console()

LOG_DIR = Path(".run") / "demo"
TERMINAL = {"sent", "failed", "dead_lettered", "dropped", "deferred", "token_invalidated"}

DIGEST_TEXT = (
    "{{ count }} people liked your post: {% for i in items %}{{ i.params.name }}"
    "{% if not loop.last %}, {% endif %}{% endfor %}"
)
DIGEST_WINDOW_S = 5
LIKERS = ("Bora", "Chen", "Dev", "Eun-ji")
# Templates per (template id, locale, channel): subject, title, body, html.
TEMPLATES: dict[tuple[str, str, str], tuple[str | None, str | None, str, str | None]] = {
    ("login_code", "en", "sms"): (None, None, "Your herald code is {{ code }}", None),
    ("login_code", "en", "push"): (None, "Sign-in code", "Your code is {{ code }}", None),
    ("login_code", "ko", "sms"): (None, None, "herald 인증번호: {{ code }}", None),
    ("login_code", "ko", "push"): (None, "로그인 코드", "인증번호는 {{ code }} 입니다", None),
    ("order_shipped", "en", "push"): (
        None,
        "Order shipped",
        "Order {{ order }} is on its way",
        None,
    ),
    ("order_shipped", "en", "email"): (
        "Your order {{ order }} has shipped",
        None,
        "Order {{ order }} left our warehouse and arrives {{ eta }}.",
        "<p>Order <b>{{ order }}</b> arrives {{ eta }}. "
        '<a href="https://shop.example/orders/{{ order }}">Track it</a></p>',
    ),
    ("order_shipped", "ko", "push"): (
        None,
        "배송 시작",
        "주문 {{ order }} 배송이 시작되었습니다",
        None,
    ),
    ("order_shipped", "ko", "email"): (
        "주문 {{ order }} 배송 시작",
        None,
        "주문 {{ order }} 이(가) {{ eta }} 도착 예정입니다.",
        "<p>주문 <b>{{ order }}</b>: {{ eta }} 도착 예정</p>",
    ),
    ("weekly_digest", "en", "email"): (
        "Your week on herald",
        None,
        "{{ count }} new posts from people you follow.",
        '<p>{{ count }} new posts. <a href="https://herald.example/feed">Read them</a></p>',
    ),
    ("weekly_digest", "en", "push"): (None, "Your week", "{{ count }} new posts", None),
    ("weekly_digest", "en", "sms"): (None, None, "{{ count }} new posts on herald", None),
    ("new_follower", "en", "push"): (None, "New follower", "{{ name }} followed you", None),
    ("post_liked", "en", "push"): (None, "New like", "{{ name }} liked your post", None),
    ("post_liked", "en", "inapp"): (None, "New like", "{{ name }} liked your post", None),
    # The digest of post_liked requests: rendered with `count` and the first `items`.
    ("social_digest", "en", "push"): (None, "Your post is popular", DIGEST_TEXT, None),
    ("social_digest", "en", "inapp"): (None, "Your post is popular", DIGEST_TEXT, None),
}


@dataclass(frozen=True)
class DemoUser:
    user_id: str
    name: str
    email: str | None
    phone: str | None
    locale: str
    timezone: str
    devices: tuple[tuple[str, str], ...] = ()  # (platform, token)
    opt_outs: tuple[tuple[str, str], ...] = ()  # (channel, category)
    unsubscribed_all: bool = False
    quiet_now: bool = False  # quiet hours around the current local time


def _apns_token() -> str:
    return uuid.uuid4().hex + uuid.uuid4().hex


def _fcm_token() -> str:
    return f"{uuid.uuid4().hex[:22]}:APA91b{uuid.uuid4().hex}{uuid.uuid4().hex}"


def demo_users(run: str) -> list[DemoUser]:
    """Six users covering the decisions: devices, opt-outs, unsubscribe, quiet hours, gaps."""
    return [
        DemoUser(
            f"{run}-alice", "Alice", "alice@example.com", "+14155550101", "en",
            "America/New_York", devices=(("ios", _apns_token()), ("ios", _apns_token())),
        ),
        DemoUser(
            f"{run}-minjun", "Min-jun", "minjun@example.kr", "+821055550102", "ko-KR",
            "Asia/Seoul", devices=(("android", _fcm_token()),),
            opt_outs=(("sms", "marketing"),),
        ),
        DemoUser(
            f"{run}-carlos", "Carlos", "carlos@example.es", None, "es-ES", "Europe/Madrid",
            devices=(("ios", _apns_token()), ("android", _fcm_token())),
            opt_outs=(("email", "marketing"), ("push", "social")),
        ),
        DemoUser(
            f"{run}-dana", "Dana", "dana@example.com", "+447911123456", "en", "Europe/London",
            devices=(("ios", _apns_token()),), unsubscribed_all=True,
        ),
        DemoUser(
            f"{run}-eli", "Eli", "eli@example.com", "+14155550104", "en", "America/Los_Angeles",
            devices=(("android", _fcm_token()),), quiet_now=True,
        ),
        DemoUser(
            f"{run}-fay", "Fay", None, None, "en", "UTC", devices=(("android", _fcm_token()),),
        ),
    ]  # fmt: skip


def demo_requests(users: list[DemoUser], run: str) -> list[tuple[str, NotificationRequest]]:
    """A realistic batch: a description for the table, and the request."""
    by = {u.name: u for u in users}
    out: list[tuple[str, NotificationRequest]] = []

    def add(what: str, user: DemoUser, **kw: Any) -> NotificationRequest:
        req = NotificationRequest(user_id=user.user_id, event_id=f"{run}-{len(out)}", **kw)
        out.append((what, req))
        return req

    for u in users:
        add(
            "sign-in code",
            u,
            source="auth",
            category="security",
            priority="high",
            channels=["sms", "push"],
            template_id="login_code",
            params={"code": "482913"},
        )
    for u in (by["Alice"], by["Min-jun"], by["Carlos"], by["Eli"]):
        add(
            "order shipped",
            u,
            source="shipping",
            category="transactional",
            channels=["push", "email", "inapp"],
            template_id="order_shipped",
            params={"order": "A-1042", "eta": "Friday"},
            collapse_key="order-A-1042",
        )
    for u in users:
        add(
            "weekly digest",
            u,
            source="growth",
            category="marketing",
            priority="low",
            template_id="weekly_digest",
            params={"count": "12"},
        )
    add(
        "new follower",
        by["Carlos"],
        source="social",
        category="social",
        channels=["push"],
        template_id="new_follower",
        params={"name": "Alice"},
    )
    for name in LIKERS:
        add(
            f"{name} liked Alice's post (digest)",
            by["Alice"],
            source="social",
            category="social",
            channels=["push", "inapp"],
            template_id="post_liked",
            params={"name": name},
            digest=Digest(key="likes", window=f"{DIGEST_WINDOW_S}s", template_id="social_digest"),
        )
    add(
        "Alice's post liked (digest, quiet hours)",
        by["Eli"],
        source="social",
        category="social",
        channels=["push", "inapp"],
        template_id="post_liked",
        params={"name": "Alice"},
        digest=Digest(key="likes", window=f"{DIGEST_WINDOW_S}s", template_id="social_digest"),
    )
    add(
        "renewal reminder (tomorrow)",
        by["Alice"],
        source="billing",
        category="transactional",
        channels=["email"],
        content={"email": Content(subject="Renewal", body="Your plan renews tomorrow.")},
        send_at=datetime.now(UTC) + timedelta(days=1),
    )
    dup = add(
        "invoice ready",
        by["Alice"],
        source="billing",
        category="transactional",
        channels=["email"],
        content={"email": Content(subject="Invoice ready", body="Your invoice is ready.")},
    )
    out.append(("invoice ready (sent twice)", dup))
    add(
        "welcome (unknown user)",
        DemoUser(f"{run}-ghost", "Ghost", None, None, "en", "UTC"),
        source="signup",
        category="transactional",
        content={"email": Content(subject="Welcome", body="Hello")},
    )
    return out


def seed(
    users: list[DemoUser], kafka: KafkaSettings, cassandra: CassandraSettings, api: str, run: str
) -> None:
    session = connect(cassandra)
    put_templates(api, session, run)
    directory = SyncDirectory(
        session, AsyncPublisher(kafka, client="demo-contacts"), hmac_key=b"herald-demo"
    )
    try:
        for u in users:
            quiet: str | None = None
            if u.quiet_now:
                local = datetime.now(ZoneInfo(u.timezone))
                start, end = local - timedelta(hours=1), local + timedelta(hours=2)
                quiet = f"{start:%H:%M}-{end:%H:%M}"
            directory.set_user(
                u.user_id,
                email=u.email,
                phone=u.phone,
                locale=u.locale,
                timezone=u.timezone,
                quiet_hours=quiet,
                unsubscribed_all=u.unsubscribed_all,
            )
            for platform, token in u.devices:
                directory.register_device(u.user_id, platform=platform, token=token, app_id="demo")
            for channel, category in u.opt_outs:
                directory.set_preference(u.user_id, channel, category, opt_in=False)
    finally:
        directory.close()
        session.cluster.shutdown()


def template_bodies() -> dict[str, dict[str, Any]]:
    """TEMPLATES as template API bodies: variants per channel and locale, the parameters
    they use declared."""
    bodies: dict[str, dict[str, Any]] = {}
    for (template_id, locale, channel), (subject, title, body, html) in TEMPLATES.items():
        variant = {"channel": channel, "locale": locale, "body": body}
        variant.update(
            {k: v for k, v in (("subject", subject), ("title", title), ("html", html)) if v}
        )
        entry = bodies.setdefault(template_id, {"params": [], "variants": []})
        entry["variants"].append(variant)
        used = set().union(*(used_params(t) for t in (subject, title, body, html) if t))
        if "items" in used:  # a digest's template: herald gives it count and items
            used -= DIGEST_NAMES
        entry["params"] = sorted(set(entry["params"]) | used)
    return bodies


def put_templates(
    base: str, session: Session, run: str, bodies: dict[str, dict[str, Any]] | None = None
) -> None:
    """Through the template API (`/v1/templates`), as an operator would: validated,
    versioned, announced to running processors; created on the first run, a new version
    only when TEMPLATES changed."""
    created = ClientStore(session).create(
        f"demo-templates-{run}", scopes={"templates:read", "templates:write"}
    )
    keys = {"X-Herald-App-Key": created.client.app_key, "X-Herald-App-Secret": created.secret}
    with httpx.Client(base_url=base, timeout=10, headers=keys) as http:
        for template_id, body in (bodies or template_bodies()).items():
            found = http.get(f"/v1/templates/{template_id}")
            if found.status_code == 404:
                answer = http.post("/v1/templates", json={"template_id": template_id, **body})
            else:
                found.raise_for_status()
                latest = found.json()
                wanted = [Variant(**v).as_dict() for v in body["variants"]]
                if latest["variants"] == wanted and latest["params"] == body["params"]:
                    continue
                answer = http.post(f"/v1/templates/{template_id}/versions", json=body)
            if answer.is_error:
                raise RuntimeError(f"template {template_id}: {answer.status_code} {answer.text}")


@contextlib.contextmanager
def status_reader(kafka: KafkaSettings) -> Iterator[Consumer]:
    """Reads notifications.status from its current end, so only this run's events show."""
    consumer = Consumer(kafka.consumer_config("demo", f"herald-demo-{uuid.uuid4().hex[:8]}"))
    meta = consumer.list_topics(topics.STATUS, timeout=10).topics[topics.STATUS]
    consumer.assign([TopicPartition(topics.STATUS, p, OFFSET_END) for p in meta.partitions])
    consumer.poll(0.5)  # resolves the end offsets before anything is published
    try:
        yield consumer
    finally:
        consumer.close()


def collect(
    consumer: Consumer,
    values: codec.Codec,
    expected: set[str],
    timeout: float,
    *,
    digests: tuple[str, int] = ("", 0),
) -> list[dict[str, Any]]:
    """Status events of the expected notifications until every one has settled, and of
    the digests the processor sends for this run (`digests`: their event id prefix and how
    many are expected to be accepted)."""
    prefix, wanted = digests
    events: list[dict[str, Any]] = []
    seen_ids: set[str] = set()
    deadline = time.monotonic() + timeout
    last_new = time.monotonic()
    with console.status("waiting for the pipeline…") as spinner:
        while time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is not None and msg.error() is None and msg.value() is not None:
                event = values.decode(msg.value() or b"", codec.STATUS)
                ours = event["notification_id"] in expected or (
                    wanted and event["event_id"].startswith(prefix)
                )
                # status ids are deterministic: a repeat is the same event seen again
                if ours and event["status_id"] not in seen_ids:
                    seen_ids.add(event["status_id"])
                    events.append(event)
                    last_new = time.monotonic()
            seen = {e["notification_id"] for e in events}
            sent = {
                e["notification_id"]
                for e in events
                if wanted and e["event_id"].startswith(prefix) and e["outcome"] in TERMINAL
            }
            spinner.update(f"waiting for the pipeline… {len(events)} status events")
            # Settled: every request has an outcome and nothing new arrived for a while.
            if seen >= expected and len(sent) >= wanted and time.monotonic() - last_new > 4.0:
                break
    return events


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


@app.command()
def demo(
    keep_running: bool = typer.Option(
        False, help="Leave the processor, senders and emulators running until Ctrl-C."
    ),
    timeout: float = typer.Option(90.0, help="Seconds to wait for the batch to settle."),
) -> None:
    """Start the pipeline, seed users, publish a realistic batch, show what happened."""
    from infra.stack.cli import ensure_up
    from infra.stack.settings import StackSettings

    stack = StackSettings()
    ensure_up(stack)  # reuses a healthy stack; creates topics and tables if missing
    # The processes the demo starts read these; explicit settings in the environment win.
    for key, value in stack.client_env().items():
        os.environ.setdefault(key, value)
    # A laptop demo: the services may use the secrets published in herald's source.
    os.environ.setdefault("HERALD_PROFILE", DEV_PROFILE)
    kafka = KafkaSettings(
        bootstrap_servers=os.environ["HERALD_KAFKA__BOOTSTRAP_SERVERS"],
        schema_registry_url=os.environ.get("HERALD_KAFKA__SCHEMA_REGISTRY_URL"),
    )
    cassandra = CassandraSettings(
        hosts=json.loads(os.environ["HERALD_CASSANDRA__HOSTS"]),
        port=int(os.environ["HERALD_CASSANDRA__PORT"]),
    )
    run = datetime.now(UTC).strftime("demo%H%M%S")
    users = demo_users(run)
    batch = demo_requests(users, run)
    # Fresh consumer groups that start at the topics' end: the demo shows its own batch,
    # not whatever earlier runs or tests left on the shared topics.
    pipeline = Pipeline(run, kafka, LOG_DIR / run)
    try:
        pipeline.start_emulators()
        pipeline.start_processor()
        pipeline.start_sender()
        api = start_api(pipeline)
        pipeline.wait_ready()
        console.print(
            f"services up: {', '.join(pipeline.services)} (logs in {pipeline.log_dir}/, "
            f"emulator control API {pipeline.control_url})"
        )
        seed(users, kafka, cassandra, api, run)
        console.print(f"seeded {len(users)} users with devices, numbers, emails and opt-outs")
        with status_reader(kafka) as consumer:
            publisher = Publisher(kafka, client="demo")
            try:
                results = publisher.publish_batch([req for _, req in batch])
            finally:
                publisher.close()
            console.print(f"published {sum(r.ok for r in results)}/{len(batch)} requests")
            expected = {req.notification_id for _, req in batch}
            # Alice's likes and Eli's (in quiet hours) each become one digest.
            digests = (f"digest:{run}-", 2)
            events = collect(
                consumer,
                codec.codec_for(kafka.schema_registry_url),
                expected,
                timeout,
                digests=digests,
            )
        ledger = httpx.get(f"{pipeline.control_url}/ledger", timeout=5).json()
        print_report(batch, users, events, ledger)
        show_inbox(api, cassandra, users[0], run)
        _check_alive(pipeline.services)
        if keep_running:
            console.print("services keep running; Ctrl-C stops them (Kafka/Cassandra stay up)")
            with contextlib.suppress(KeyboardInterrupt):
                while True:
                    time.sleep(1)
    finally:
        pipeline.stop()
    console.print(
        "herald services stopped; Kafka and Cassandra keep running (`make down` stops them)."
    )


def start_api(pipeline: Pipeline) -> str:
    """The send API, for the inbox: its base URL."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {"HERALD_API__PORT": str(port), "HERALD_LINKS__BASE_URL": base}
    spec = ServiceSpec("send-api", python_module("producers", "api"), ready_port=port, env=env)
    pipeline.services[spec.name] = start(spec, pipeline.log_dir, timeout=60)
    return base


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


def _check_alive(services: dict[str, Service]) -> None:
    dead = [name for name, svc in services.items() if not svc.alive()]
    if dead:
        console.print(f"[red]exited during the demo: {', '.join(dead)} (see {LOG_DIR}/)[/red]")
        raise typer.Exit(1)


if __name__ == "__main__":
    app()
