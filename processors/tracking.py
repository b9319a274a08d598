"""Open and click tracking for email: signed tokens, link rewriting, verification.

The processor calls `rewrite_html` on rendered email HTML; the tracking server
(`python -m herald.ops.tracking`) calls `verify` on every hit. A token is
`<payload>.<signature>`, both base64url without padding: the payload is compact JSON
(kind, delivery id, notification id and, for clicks, the target URL) and the signature
an HMAC-SHA256 over the payload under a key derived from the secret. Nothing else is
trusted: the redirect target comes from the signed payload only, so a tampered link
cannot become an open redirect.
"""

from __future__ import annotations

import binascii
import hmac
import html as htmllib
import json
import re
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, SecretStr

from infra.tokens import b64, mac, unb64
from schemas.errors import HeraldError

Kind = Literal["open", "click"]
LOCAL_TRACKING_SECRET = "herald-local-tracking-secret"
_SALT = b"herald.tracking.v1"
_ANCHOR_HREF = re.compile(r"""(<a\b[^>]*?\bhref\s*=\s*)(["'])(.*?)\2""", re.IGNORECASE | re.DOTALL)
_BODY_END = re.compile(r"</body\s*>", re.IGNORECASE)
# A JSON string, as it stands inside a token's compact JSON payload.
_STRING = json.JSONEncoder()


class TrackingSettings(BaseModel):
    enabled: bool = True
    base_url: str = "http://127.0.0.1:9404"
    # The default only suits a local stack (services refuse it outside HERALD_PROFILE=dev):
    # set HERALD_TRACKING__SECRET, the same for the processor (signs) and the tracking
    # server (verifies).
    secret: SecretStr = SecretStr(LOCAL_TRACKING_SECRET)

    def published_secrets(self) -> list[str]:
        return (
            ["HERALD_TRACKING__SECRET"]
            if self.secret.get_secret_value() == LOCAL_TRACKING_SECRET
            else []
        )


class BadToken(HeraldError, ValueError):
    """A token that was not signed by us, or was altered. Never retry; answer 400."""


@dataclass(frozen=True)
class Claim:
    kind: Kind
    delivery_id: str
    notification_id: str
    url: str | None = None
    # Optional context so the tracking server can write a complete status event without a
    # database lookup; it looks them up in the notification log when they are absent.
    user_id: str | None = None
    category: str | None = None
    event_id: str | None = None


_FIELDS = {
    "d": "delivery_id",
    "n": "notification_id",
    "u": "url",
    "uid": "user_id",
    "cat": "category",
    "ev": "event_id",
}


def _signature(payload: str, secret: SecretStr) -> bytes:
    return mac(payload, secret, _SALT)


def sign(claim: Claim, secret: SecretStr) -> str:
    return _Signer(claim, secret).token(claim.kind, claim.url)


def verify(token: str, secret: SecretStr, *, kind: Kind | None = None) -> Claim:
    """The claim inside a token we signed; raises BadToken on any alteration."""
    payload, sep, sig = token.partition(".")
    if not sep or not payload or not sig:
        raise BadToken("malformed token")
    try:
        given = unb64(sig)
    except (binascii.Error, ValueError):
        raise BadToken("malformed signature") from None
    if not hmac.compare_digest(given, _signature(payload, secret)):
        raise BadToken("bad signature")
    try:
        body = json.loads(unb64(payload))
        claim = Claim(kind=body["k"], **{name: body.get(short) for short, name in _FIELDS.items()})
        if not (isinstance(claim.delivery_id, str) and isinstance(claim.notification_id, str)):
            raise ValueError("ids missing")
    except (binascii.Error, ValueError, KeyError, TypeError):
        # Signed by us yet unreadable: only a key leak or a bug gets here.
        raise BadToken("unreadable payload") from None
    if kind is not None and claim.kind != kind:
        raise BadToken(f"token is for {claim.kind}, not {kind}")
    if claim.kind == "click" and not (claim.url or "").lower().startswith(("http://", "https://")):
        raise BadToken("click target is not an http(s) URL")
    return claim


class _Signer:
    """The tokens of one delivery: the payload is compact JSON (`k`, `d`, `n`, then `u`,
    `uid`, `cat`, `ev` when set) whose fixed fields are encoded once, not once per link
    (an email has several: its links, the footer's two, the open pixel)."""

    def __init__(self, context: Claim, secret: SecretStr) -> None:
        enc = _STRING.encode
        self._head = f',"d":{enc(context.delivery_id)},"n":{enc(context.notification_id)}'
        self._tail = "".join(
            f',"{short}":{enc(value)}'
            for short, value in (
                ("uid", context.user_id),
                ("cat", context.category),
                ("ev", context.event_id),
            )
            if value is not None
        )
        self._secret = secret

    def token(self, kind: Kind, url: str | None = None) -> str:
        link = "" if url is None else f',"u":{_STRING.encode(url)}'
        payload = b64(f'{{"k":"{kind}"{self._head}{link}{self._tail}}}'.encode())
        return f"{payload}.{b64(_signature(payload, self._secret))}"


def rewrite_html(
    html: str,
    *,
    delivery_id: str,
    notification_id: str,
    settings: TrackingSettings,
    user_id: str | None = None,
    category: str | None = None,
    event_id: str | None = None,
) -> str:
    """Route every http(s) link through a signed click redirect and append an open pixel.

    mailto:, tel: and in-page anchors stay as they are. Returns `html` unchanged when
    tracking is disabled. `user_id`, `category` and `event_id`, when given, ride in the
    signed tokens so the status events need no lookup.
    """
    if not settings.enabled:
        return html
    context = Claim("open", delivery_id, notification_id, None, user_id, category, event_id)
    signer = _Signer(context, settings.secret)
    base = settings.base_url.rstrip("/")

    def link(m: re.Match[str]) -> str:
        target = htmllib.unescape(m.group(3)).strip()
        if not target.lower().startswith(("http://", "https://")):
            return m.group(0)
        tracked = f"{base}/c/{signer.token('click', target)}"
        return f"{m.group(1)}{m.group(2)}{htmllib.escape(tracked)}{m.group(2)}"

    out = _ANCHOR_HREF.sub(link, html)
    pixel_src = f"{base}/o/{signer.token('open')}"
    pixel = (
        f'<img src="{htmllib.escape(pixel_src)}" width="1" height="1" alt="" style="display:none">'
    )
    ends = list(_BODY_END.finditer(out))
    if ends:
        at = ends[-1].start()
        return out[:at] + pixel + out[at:]
    return out + pixel
