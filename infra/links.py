"""Signed links a user follows from an email: one-click unsubscribe (RFC 8058) and the
preference page. The processor signs them into every non-mandatory email; the send API's
public pages verify them. A token is `<payload>.<signature>` (base64url, no padding):
compact JSON naming the user, the purpose, for unsubscribe the channel and category, and
an expiry; HMAC-SHA256 under a key derived from the secret. The token is the capability:
whoever holds the link may change that one user's preferences, nothing else.
"""

from __future__ import annotations

import binascii
import hmac
import html as htmllib
import json
import re
import time
from dataclasses import dataclass
from typing import Literal
from urllib.parse import quote

from pydantic import BaseModel, SecretStr

from infra.tokens import b64, compact_json, mac, unb64
from schemas.errors import HeraldError

# `inbox`: a user token for the in-app feed, minted by an API client (producers.inbox).
Purpose = Literal["unsubscribe", "preferences", "inbox"]
LOCAL_LINK_SECRET = "herald-local-link-secret"
_SALT = b"herald.links.v1"
_BODY_END = re.compile(r"</body\s*>", re.IGNORECASE)
DAY_S = 86_400
# Delivery `data` key the processor fills and the email senders turn into the
# List-Unsubscribe header; never set for mandatory categories.
LIST_UNSUBSCRIBE = "herald.list_unsubscribe"


class LinkSettings(BaseModel):
    # Public base URL of the send API's pages (`/u/...`, `/preferences/...`).
    base_url: str = "http://127.0.0.1:8080"
    # The default only suits a local stack (services refuse it outside HERALD_PROFILE=dev):
    # set the same secret for the processor (signs) and the send API (verifies).
    secret: SecretStr = SecretStr(LOCAL_LINK_SECRET)
    # Mail is read late: an unsubscribe link keeps working for months (Gmail and Yahoo
    # expect it to work as long as the message may be read); a preference page link,
    # which shows and changes more, expires sooner.
    unsubscribe_ttl_s: int = 180 * DAY_S
    preferences_ttl_s: int = 14 * DAY_S

    def published_secrets(self, name: str) -> list[str]:
        return [name] if self.secret.get_secret_value() == LOCAL_LINK_SECRET else []


class BadLink(HeraldError, ValueError):
    """Not signed by us, altered, for another purpose, or expired. Answer 400/403."""


@dataclass(frozen=True)
class Link:
    purpose: Purpose
    user_id: str
    expires_at: int  # epoch seconds
    channel: str | None = None
    category: str | None = None
    client: str | None = None  # the API client that minted an inbox token


def _signature(payload: str, secret: SecretStr) -> bytes:
    return mac(payload, secret, _SALT)


def sign(link: Link, secret: SecretStr) -> str:
    body = {"p": link.purpose, "u": link.user_id, "e": link.expires_at}
    if link.channel is not None:
        body.update(c=link.channel, k=link.category or "*")
    if link.client is not None:
        body["a"] = link.client
    payload = b64(compact_json(body))
    return f"{payload}.{b64(_signature(payload, secret))}"


def verify(token: str, secret: SecretStr, purpose: Purpose, *, now: float | None = None) -> Link:
    payload, _, sig = token.partition(".")
    try:
        given = unb64(sig)
        expected = _signature(payload, secret)
    except (binascii.Error, ValueError):
        raise BadLink("malformed link") from None
    if not hmac.compare_digest(given, expected):
        raise BadLink("bad signature")
    try:
        body = json.loads(unb64(payload))
        link = Link(
            body["p"], body["u"], int(body["e"]), body.get("c"), body.get("k"), body.get("a")
        )
    except (binascii.Error, ValueError, KeyError, TypeError):
        raise BadLink("unreadable link") from None  # signed yet unreadable: a bug
    if link.purpose != purpose:
        raise BadLink(f"a {link.purpose} link, not {purpose}")
    if link.expires_at < (time.time() if now is None else now):
        raise BadLink("expired")
    return link


def unsubscribe_url(user_id: str, channel: str, category: str, settings: LinkSettings) -> str:
    expires = int(time.time()) + settings.unsubscribe_ttl_s
    token = sign(Link("unsubscribe", user_id, expires, channel, category), settings.secret)
    return f"{settings.base_url.rstrip('/')}/u/{quote(token)}"


def preferences_url(user_id: str, settings: LinkSettings) -> str:
    expires = int(time.time()) + settings.preferences_ttl_s
    token = sign(Link("preferences", user_id, expires), settings.secret)
    return f"{settings.base_url.rstrip('/')}/preferences/{quote(token)}"


def add_footer(
    html: str | None, text: str, user_id: str, category: str, settings: LinkSettings
) -> tuple[str | None, str, str]:
    """(html, text, one-click URL): both parts get unsubscribe and preference links; the
    URL goes to the List-Unsubscribe header. For non-mandatory categories only."""
    unsubscribe = unsubscribe_url(user_id, "email", category, settings)
    prefs = preferences_url(user_id, settings)
    text = f"{text}\n\n--\nUnsubscribe: {unsubscribe}\nEmail preferences: {prefs}\n"
    if html is not None:
        footer = (
            f'<p style="font-size:small"><a href="{htmllib.escape(unsubscribe)}">Unsubscribe'
            f'</a> · <a href="{htmllib.escape(prefs)}">Email preferences</a></p>'
        )
        ends = list(_BODY_END.finditer(html))
        at = ends[-1].start() if ends else len(html)
        html = html[:at] + footer + html[at:]
    return html, text, unsubscribe
