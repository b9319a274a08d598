"""The demo's data: its users (devices, numbers, emails, opt-outs, quiet hours), its
requests, and its templates as template API bodies."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from producers.request import Content, Digest, NotificationRequest
from schemas.templating import DIGEST_NAMES, used_params

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
