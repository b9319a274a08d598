"""The send API's public routes, reached by people and providers rather than API clients:
one-click unsubscribe (RFC 8058), the preference page, and the SMS provider's inbound
webhook. None takes an app key: a signed link (`infra.links`) or the provider's request
signature is the credential, and each only ever changes the one user it names.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from email import policy
from email.message import Message
from email.parser import BytesParser
from typing import Any
from urllib.parse import parse_qsl, quote
from xml.sax.saxutils import escape as xml_escape

from jinja2 import DictLoader, Environment, select_autoescape
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from infra.links import BadLink, Link, LinkSettings, verify
from producers.contacts import QuietHours
from schemas.channels import MANDATORY_CATEGORIES, PreferenceChannel
from schemas.validation import ValidationError, normalize_phone

# Categories every page shows; others appear once the user has a preference for them.
CATEGORIES = ("transactional", "marketing", "social")
CHANNEL_NAMES = {"push": "Push", "sms": "SMS", "email": "Email", "inapp": "In-app"}
CSRF_COOKIE = "herald_csrf"
# Carrier keywords (CTIA; Twilio's defaults): opt out, back in, or ask for help.
STOP_WORDS = frozenset({"STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "OPTOUT"})
START_WORDS = frozenset({"START", "YES", "UNSTOP", "OPTIN"})
HELP_WORDS = frozenset({"HELP", "INFO"})
MAX_FORM_BYTES = 64 * 1024

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
<title>{{ title }}</title>
<style>
body{font-family:system-ui,sans-serif;max-width:40rem;margin:2rem auto;padding:0 1rem}
table{border-collapse:collapse}th,td{padding:.4rem .8rem;text-align:center}
th[scope=row]{text-align:left}.vh{position:absolute;width:1px;height:1px;overflow:hidden;
clip:rect(0 0 0 0)}input[type=checkbox]{width:1.3rem;height:1.3rem}
button{font-size:1rem;padding:.5rem 1rem;margin-top:1rem}
</style></head><body><main>
<h1>{{ title }}</h1>
{% block main %}{% endblock %}
</main></body></html>"""

_MESSAGE = """{% extends "page" %}{% block main %}
<p role="status">{{ message }}</p>
{% if form_action %}<form method="post" action="{{ form_action }}">
<input type="hidden" name="List-Unsubscribe" value="One-Click">
<button type="submit">Unsubscribe</button></form>{% endif %}
{% endblock %}"""

_PREFERENCES = """{% extends "page" %}{% block main %}
{% if saved %}<p role="status">Your preferences are saved.</p>{% endif %}
{% if error %}<p role="alert">{{ error }}</p>{% endif %}
<form method="post" action="{{ action }}">
<input type="hidden" name="csrf" value="{{ csrf }}">
<table>
<caption>What we may send you, and where. Security messages are always sent.</caption>
<thead><tr><th scope="col">Category</th>
{% for ch, name in channels %}<th scope="col">{{ name }}</th>{% endfor %}</tr></thead>
<tbody>{% for cat in categories %}<tr><th scope="row">{{ cat | capitalize }}</th>
{% for ch, name in channels %}<td><input type="checkbox" id="pref-{{ ch }}-{{ cat }}"
 name="pref:{{ ch }}:{{ cat }}" value="on"{% if state[(ch, cat)] %} checked{% endif %}>
<label for="pref-{{ ch }}-{{ cat }}" class="vh">{{ cat | capitalize }} by {{ name }}</label>
</td>{% endfor %}</tr>{% endfor %}</tbody></table>
<fieldset><legend>Quiet hours ({{ timezone }}): nothing but urgent messages</legend>
<label for="quiet_start">From</label>
<input type="time" id="quiet_start" name="quiet_start" value="{{ quiet_start }}">
<label for="quiet_end">until</label>
<input type="time" id="quiet_end" name="quiet_end" value="{{ quiet_end }}">
<p>Leave both empty for no quiet hours.</p></fieldset>
<button type="submit">Save preferences</button>
</form>{% endblock %}"""

_ENV = Environment(
    loader=DictLoader({"page": _PAGE, "message": _MESSAGE, "preferences": _PREFERENCES}),
    autoescape=select_autoescape(default=True),
)
# No framing (clickjacking), no scripts at all: the pages work without JavaScript.
_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
}


def _html(template: str, status: int = 200, **values: Any) -> HTMLResponse:
    body = _ENV.get_template(template).render(**values)
    return HTMLResponse(body, status, headers=_HEADERS)


def _message(title: str, message: str, status: int = 200, action: str | None = None) -> Response:
    return _html("message", status, title=title, message=message, form_action=action)


async def _form(request: Request) -> list[tuple[str, str]]:
    body = await request.body()
    if len(body) > MAX_FORM_BYTES:
        return []
    return parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True)


async def _one_click(request: Request) -> bool:
    """RFC 8058 lets the mail provider post `List-Unsubscribe=One-Click` urlencoded or as
    multipart/form-data."""
    ctype = request.headers.get("content-type", "")
    if not ctype.lower().startswith("multipart/form-data"):
        return ("List-Unsubscribe", "One-Click") in await _form(request)
    body = await request.body()
    if len(body) > MAX_FORM_BYTES:
        return False
    parsed = BytesParser(policy=policy.HTTP).parsebytes(
        f"Content-Type: {ctype}\r\n\r\n".encode("latin-1", "replace") + body
    )
    for part in parsed.get_payload() if parsed.is_multipart() else []:
        if not isinstance(part, Message):
            continue
        value = part.get_payload(decode=True)
        named = part.get_param("name", header="content-disposition") == "List-Unsubscribe"
        if named and isinstance(value, bytes) and value.strip() == b"One-Click":
            return True
    return False


def _link(request: Request, purpose: Any) -> Link | Response:
    settings: LinkSettings = request.app.state.intake.settings.links
    try:
        return verify(request.path_params["token"], settings.secret, purpose)
    except BadLink as err:
        text = "This link has expired." if str(err) == "expired" else "This link is not valid."
        return _message("Link not valid", f"{text} Use the link in a more recent message.", 400)


# --- one-click unsubscribe -------------------------------------------------------


async def unsubscribe_page(request: Request) -> Response:
    """A person who opens the link sees a button; only the POST unsubscribes (RFC 8058:
    link scanners and prefetchers issue GETs)."""
    link = _link(request, "unsubscribe")
    if isinstance(link, Response):
        return link
    what = f"{link.category} messages by {CHANNEL_NAMES.get(link.channel or '', link.channel)}"
    return _message("Unsubscribe", f"Stop receiving {what}?", action=request.url.path)


async def unsubscribe(request: Request) -> Response:
    """RFC 8058 one-click: `List-Unsubscribe=One-Click` posted to the signed URL records the
    opt-out for that channel and category. Idempotent: the same opt-out again changes
    nothing but its timestamp."""
    link = _link(request, "unsubscribe")
    if isinstance(link, Response):
        return link
    if not await _one_click(request):
        return _message("Unsubscribe", "Missing List-Unsubscribe=One-Click.", 400)
    directory = request.app.state.intake.directory
    if await directory.get_user(link.user_id) is None:
        return _message("Unsubscribed", "You will receive no more of these messages.")
    await directory.set_preference(link.user_id, link.channel, link.category, False)
    name = CHANNEL_NAMES.get(link.channel or "", link.channel)
    return _message("Unsubscribed", f"You will receive no more {link.category} messages by {name}.")


# --- preference page -------------------------------------------------------------


def _state(user: dict[str, Any]) -> tuple[list[str], dict[tuple[str, str], bool]]:
    explicit = {(p["channel"], p["category"]): p["opt_in"] for p in user["preferences"]}
    extra = {c for _ch, c in explicit if c != "*" and c not in MANDATORY_CATEGORIES}
    categories = [*CATEGORIES, *sorted(extra - set(CATEGORIES))]
    state = {
        (ch.value, cat): bool(explicit.get((ch.value, cat), explicit.get((ch.value, "*"), True)))
        for ch in PreferenceChannel
        for cat in categories
    }
    return categories, state


def _csrf_ok(request: Request, form: list[tuple[str, str]]) -> bool:
    # Double submit: a cross-site form cannot read or set our cookie. The signed link is a
    # second secret, so a forged POST would need both.
    cookie = request.cookies.get(CSRF_COOKIE, "")
    given = dict(form).get("csrf", "")
    origin = request.headers.get("origin")
    same_origin = (
        origin in (None, "null") or origin == f"{request.url.scheme}://{request.url.netloc}"
    )
    return bool(cookie) and hmac.compare_digest(cookie, given) and same_origin


async def _preferences_view(
    request: Request, user: dict[str, Any], *, error: str | None = None, status: int = 200
) -> Response:
    categories, state = _state(user)
    quiet = QuietHours.parse(user["quiet_hours"]) if user["quiet_hours"] else None
    csrf = request.cookies.get(CSRF_COOKIE) or secrets.token_urlsafe(24)
    response = _html(
        "preferences",
        status,
        title="Your notification preferences",
        channels=[(ch.value, CHANNEL_NAMES[ch.value]) for ch in PreferenceChannel],
        categories=categories,
        state=state,
        quiet_start=str(quiet).split("-")[0] if quiet else "",
        quiet_end=str(quiet).split("-")[1] if quiet else "",
        timezone=user["timezone"] or "UTC",
        csrf=csrf,
        action=request.url.path,
        saved=request.query_params.get("saved") == "1",
        error=error,
    )
    path = quote(request.url.path)
    response.set_cookie(
        CSRF_COOKIE,
        csrf,
        httponly=True,
        samesite="strict",
        path=path,
        secure=request.url.scheme == "https",
    )
    return response


async def preferences_page(request: Request) -> Response:
    """The user's channels and categories and quiet hours, as a plain HTML form."""
    link = _link(request, "preferences")
    if isinstance(link, Response):
        return link
    user = await request.app.state.intake.directory.get_user(link.user_id)
    if user is None:
        return _message("Unknown user", "There is nothing stored for you.", 404)
    return await _preferences_view(request, user)


async def save_preferences(request: Request) -> Response:
    """Store every cell of the form (an unticked box is absent from it: opted out), then
    redirect to the page (post/redirect/get)."""
    link = _link(request, "preferences")
    if isinstance(link, Response):
        return link
    directory = request.app.state.intake.directory
    user = await directory.get_user(link.user_id)
    if user is None:
        return _message("Unknown user", "There is nothing stored for you.", 404)
    form = await _form(request)
    if not _csrf_ok(request, form):
        return _message("Not saved", "This form expired: reload the page and try again.", 403)
    fields = dict(form)
    categories, _ = _state(user)
    rows = [
        (ch.value, cat, f"pref:{ch.value}:{cat}" in fields)
        for ch in PreferenceChannel
        for cat in categories
    ]
    start, end = fields.get("quiet_start", ""), fields.get("quiet_end", "")
    quiet: str | None = f"{start}-{end}" if start and end else None
    if bool(start) != bool(end):
        return await _preferences_view(
            request, user, error="Give both ends of the quiet hours, or neither.", status=400
        )
    try:
        await directory.set_user(link.user_id, quiet_hours=quiet)
    except ValidationError:
        return await _preferences_view(
            request, user, error="Quiet hours must be times like 22:00.", status=400
        )
    await directory.set_preferences(link.user_id, rows)
    return RedirectResponse(f"{request.url.path}?saved=1", 303, headers=_HEADERS)


# --- SMS inbound (Twilio) -------------------------------------------------------


def twilio_signature(url: str, params: list[tuple[str, str]], auth_token: str) -> str:
    """Twilio's X-Twilio-Signature: base64 HMAC-SHA1 over the URL it called followed by
    every POST parameter, sorted by name, as name + value."""
    data = url + "".join(k + v for k, v in sorted(params))
    digest = hmac.new(auth_token.encode(), data.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


def _twiml(text: str | None) -> Response:
    inner = f"<Message>{xml_escape(text)}</Message>" if text else ""
    body = f'<?xml version="1.0" encoding="UTF-8"?><Response>{inner}</Response>'
    return Response(body, 200, media_type="application/xml")


async def sms_inbound(request: Request) -> Response:
    """Twilio's inbound message webhook: STOP opts the sender's number out of SMS (every
    category), START back in, HELP answers with the configured help text. Any other
    message is acknowledged and ignored. A bad or missing signature is 403."""
    settings = request.app.state.intake.settings.sms_inbound
    if settings.twilio_auth_token is None:
        return Response("inbound SMS is not configured", 404)
    form = await _form(request)
    url = settings.public_url or str(request.url)
    expected = twilio_signature(url, form, settings.twilio_auth_token.get_secret_value())
    if not hmac.compare_digest(request.headers.get("x-twilio-signature", ""), expected):
        return Response("bad signature", 403)
    fields = dict(form)
    words = fields.get("Body", "").strip().upper().split()
    keyword = words[0] if words else ""
    if keyword in HELP_WORDS:
        return _twiml(settings.help_text)
    if keyword not in STOP_WORDS | START_WORDS:
        return _twiml(None)
    directory = request.app.state.intake.directory
    try:
        phone = normalize_phone(fields.get("From", ""), region=directory.phone_region)
    except ValidationError:
        return _twiml(None)
    user_id = await directory.user_for_contact("phone", phone)
    opt_in = keyword in START_WORDS
    if user_id is not None:
        await directory.set_preference(user_id, "sms", "*", opt_in)
    return _twiml(settings.start_text if opt_in else settings.stop_text)
