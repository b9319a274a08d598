"""Contact validation shared by intake (API, producer library) and the processor.

Every check raises `ValidationError(field, message)` naming the offending field, so an API
can answer 400 with the field and a caller can fix its input. A validation error is never
worth retrying with the same input. Messages never repeat the value: it may be personal data.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from typing import Any
from urllib.parse import urlsplit

import email_validator
import phonenumbers

from schemas.channels import Platform
from schemas.errors import HeraldError

DEFAULT_PHONE_REGION = "US"
MAX_TOKEN_LEN = 4096

_APNS_TOKEN = re.compile(r"^[0-9a-fA-F]{64}$")
# FCM registration tokens: "<instance id>:<opaque base64url>", ~160 chars today; Google
# documents no fixed length, so only the shape and a generous bound are checked.
_FCM_TOKEN = re.compile(r"^[A-Za-z0-9_-]{8,}:[A-Za-z0-9_-]{32,}$")
_B64URL = re.compile(r"^[A-Za-z0-9_-]+=*$")
_SURROGATE = re.compile("[\ud800-\udfff]")
# What str.splitlines breaks on, and NUL: each can end an email or HTTP header line.
_LINE_BREAK = re.compile("[\n\r\x0b\x0c\x1c-\x1e\x85\u2028\u2029\x00]")
# Only the characters a written phone number uses: ids such as "u-4155550123" stay ids.
_PHONE_SHAPE = re.compile(r"^\+?[\d ().-]{7,}$")


class ValidationError(HeraldError, ValueError):
    """Input rejected; `field` names it (dotted path, e.g. `content.email.body`). Not retriable."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message

    def as_dict(self) -> dict[str, str]:
        return {"field": self.field, "message": self.message}


def check_text(value: Any, field: str = "") -> None:
    """Refuse the first string UTF-8 cannot encode, naming its field: a lone UTF-16
    surrogate (JSON `"\\ud800"`) parses, but no Avro, Kafka or Cassandra write takes it.
    A bad map key names the map."""
    if isinstance(value, str):
        if _SURROGATE.search(value):
            raise ValidationError(field or "body", "a lone UTF-16 surrogate is not text")
    elif isinstance(value, dict):
        for key, item in value.items():
            check_text(key, field)
            check_text(item, f"{field}.{key}" if field else str(key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            check_text(item, f"{field}[{i}]")


def has_line_break(value: str) -> bool:
    return _LINE_BREAK.search(value) is not None


def check_header_value(value: str | None, field: str) -> None:
    """Refuse a line break in text bound for an email header (subject) or a push provider's
    headers (title, collapse id): a sender would refuse it anyway, after intake said 202."""
    if value is not None and has_line_break(value):
        raise ValidationError(field, "a line break (CR, LF, U+2028, ...) cannot go in a header")


def validate_email(value: str, field: str = "email") -> str:
    """Syntax check (no DNS lookup: intake must not depend on the network); returns the
    normalized address (domain lower-cased, IDNA handled)."""
    if not isinstance(value, str) or not value.strip():
        raise ValidationError(field, "an email address is required")
    try:
        info = email_validator.validate_email(value.strip(), check_deliverability=False)
    except email_validator.EmailNotValidError as exc:
        raise ValidationError(
            field, f"not a valid email address ({_scrub(str(exc), value)})"
        ) from None
    return str(info.normalized)


def normalize_phone(value: str, field: str = "phone", region: str = DEFAULT_PHONE_REGION) -> str:
    """Parse a number written in any common form; returns E.164 (`+14155550100`).
    Numbers without a country code are read in `region`."""
    if not isinstance(value, str) or not value.strip():
        raise ValidationError(field, "a phone number is required")
    try:
        parsed = phonenumbers.parse(value, region)
    except phonenumbers.NumberParseException:
        raise ValidationError(field, "not a phone number") from None
    if not phonenumbers.is_valid_number(parsed):
        raise ValidationError(field, "not a valid phone number for its country (E.164 expected)")
    return str(phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164))


_CONTACT_AS_ID = (
    "is an email address or phone number; use an opaque id (it is a Kafka and Cassandra key)"
)


def refuse_contact_as_id(
    value: str, field: str = "user_id", region: str = DEFAULT_PHONE_REGION
) -> None:
    """A user id is a Kafka key and a Cassandra partition key in clear, so one that is an
    email address or a phone number (valid in `region` or with +country) is refused rather
    than carried. A numeric id that happens to be a valid number there is refused too:
    prefix such ids (`u-4155550123`)."""
    if "@" in value:
        try:
            email_validator.validate_email(value, check_deliverability=False)
        except email_validator.EmailNotValidError:
            pass
        else:
            raise ValidationError(field, _CONTACT_AS_ID)
    if _PHONE_SHAPE.match(value):
        try:
            parsed = phonenumbers.parse(value, region)
        except phonenumbers.NumberParseException:
            return
        if phonenumbers.is_valid_number(parsed):
            raise ValidationError(field, _CONTACT_AS_ID)


def validate_token(platform: Platform | str, value: str, field: str = "token") -> str:
    """Check a device token's shape for its platform; returns the normalized token.

    ios: an APNs device token, 64 hex digits (returned lower-case).
    android: an FCM registration token, `<instance id>:<opaque base64url>`.
    web: a Web Push subscription as JSON (`{"endpoint": "https://…", "keys": {"p256dh",
    "auth"}}`, returned compact), or an FCM registration token from the FCM JS SDK.
    """
    try:
        platform = Platform(platform)
    except ValueError:
        allowed = ", ".join(p.value for p in Platform)
        raise ValidationError("platform", f"must be one of {allowed}") from None
    if not isinstance(value, str) or not value:
        raise ValidationError(field, "a device token is required")
    if len(value) > MAX_TOKEN_LEN:
        raise ValidationError(field, f"longer than {MAX_TOKEN_LEN} characters")
    if platform is Platform.IOS:
        if not _APNS_TOKEN.match(value):
            raise ValidationError(field, "an APNs device token is 64 hexadecimal characters")
        return value.lower()
    if platform is Platform.ANDROID:
        if not _FCM_TOKEN.match(value):
            raise ValidationError(
                field, "not an FCM registration token (<instance id>:<base64url>)"
            )
        return value
    if value.lstrip().startswith("{"):
        return _web_subscription(value, field)
    if _FCM_TOKEN.match(value):
        return value
    raise ValidationError(
        field, "a web device token is a Web Push subscription (JSON) or an FCM token"
    )


def _web_subscription(value: str, field: str) -> str:
    try:
        sub = json.loads(value)
    except json.JSONDecodeError:
        raise ValidationError(field, "Web Push subscription is not valid JSON") from None
    if not isinstance(sub, dict):
        raise ValidationError(field, "Web Push subscription must be a JSON object")
    endpoint = sub.get("endpoint")
    parts = urlsplit(endpoint) if isinstance(endpoint, str) else None
    if parts is None or parts.scheme != "https" or not parts.netloc:
        raise ValidationError(f"{field}.endpoint", "must be an https URL")
    keys = sub.get("keys")
    if not isinstance(keys, dict):
        raise ValidationError(f"{field}.keys", "must hold p256dh and auth")
    for name in ("p256dh", "auth"):
        key = keys.get(name)
        if not isinstance(key, str) or not _B64URL.match(key):
            raise ValidationError(f"{field}.keys.{name}", "must be base64url")
    return json.dumps(
        {"endpoint": endpoint, "keys": {"p256dh": keys["p256dh"], "auth": keys["auth"]}},
        separators=(",", ":"),
    )


def contact_hmac(kind: str, value: str, key: bytes) -> str:
    """Lookup key for `users_by_contact`: contacts are never stored as a key in clear."""
    return hmac.new(key, f"{kind}:{value}".encode(), hashlib.sha256).hexdigest()


def _scrub(message: str, value: str) -> str:
    # email-validator quotes parts of the input in some messages.
    return message.replace(value, "<value>")
