"""Structured JSON logs with personal data masked, for every herald service.

Every entry point calls `configure_logging(service)` once; everything else logs through
`logging.getLogger(__name__)` and passes ids as extras:

    log.info("sent", extra={"notification_id": nid, "delivery_id": did})

The masking filter sits on the handler (child loggers' records never pass the root
logger's own filters), so every line is masked whichever logger wrote it: the formatted
message (so `%s` arguments too), string extras and exception text.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from datetime import UTC, datetime
from typing import IO, Any

import phonenumbers

from schemas.validation import DEFAULT_PHONE_REGION

# Unicode letters on both sides (josé@…, …@bücher.example) and punycode TLDs: herald's
# email validation accepts internationalised addresses, so the mask must cover them.
_EMAIL = re.compile(r"(?<![\w.+-])[\w.%+-]+@((?:[\w-]+\.)+(?:[^\W\d_]{2,}|xn--[\w-]+))")
# "+", or "%2B" when a URL carried it (query strings of provider calls).
_PLUS = r"(?:\+|%2[Bb])"
# E.164 (+821012345678), national numbers with a trunk 0 (01012345678) and the usual
# written forms (+1 (555) 123-4567, 555-123-4567, 010 1234 5678). Digits are never preceded
# or followed by a word character, "-" or ".", so uuids, dates, versions and IP addresses
# stay intact.
_PHONE = re.compile(
    r"(?<![\w.+-])"
    rf"(?:{_PLUS}\d{{7,15}}|0\d{{8,10}}"
    rf"|(?:{_PLUS}\d{{1,3}}[ .-]?)?(?:\(\d{{1,4}}\)[ .-]?)?\d{{2,4}}[ .-]\d{{3,4}}[ .-]\d{{3,4}}"
    rf"|(?:{_PLUS}\d{{1,3}}[ .-]?)?\(\d{{1,4}}\)[ .-]?\d{{3,4}}[ .-]?\d{{3,4}})"
    r"(?![\w]|[.-]\d)"
)
# Bare digit runs without a leading 0 (4155550123, 821012345678) are also offsets, epoch
# timestamps and ids: masked only when phonenumbers says they are a valid number, national
# in the default region or international without its "+".
_BARE_DIGITS = re.compile(r"(?<![\w.+%-])[1-9]\d{9,14}(?![\w]|[.-]\d)")
# APNs tokens are 64 hex digits; FCM registration tokens are ~150 chars of base64url with
# a ":" after the instance id. Any opaque run this long is treated as a credential.
_TOKEN = re.compile(
    r"(?<![\w:-])"
    r"(?:[0-9A-Fa-f]{40,}|[A-Za-z0-9_-]{8,}:[A-Za-z0-9_-]{30,}|[A-Za-z0-9_-]{64,})"
    r"(?![\w:-])"
)

# Attributes every LogRecord has; anything else on a record came in through `extra`.
_STANDARD = frozenset(
    vars(logging.LogRecord("x", logging.INFO, "x", 0, "x", None, None)).keys()
) | {"message", "asctime", "taskName"}


def _mask_phone(m: re.Match[str]) -> str:
    text = m.group(0)
    plus = next((p for p in ("+", "%2B", "%2b") if text.startswith(p)), "")
    digits = re.sub(r"\D", "", text[len(plus) :])
    return plus + "*" * (len(digits) - 2) + digits[-2:]


def _is_phone(digits: str) -> bool:
    for value, region in ((digits, DEFAULT_PHONE_REGION), (f"+{digits}", None)):
        try:
            if phonenumbers.is_valid_number(phonenumbers.parse(value, region)):
                return True
        except phonenumbers.NumberParseException:
            continue
    return False


def _mask_bare(m: re.Match[str]) -> str:
    return _mask_phone(m) if _is_phone(m.group(0)) else m.group(0)


def mask(text: str) -> str:
    """Replace emails, phone numbers and push tokens in free text."""
    text = _EMAIL.sub(lambda m: f"***@{m.group(1)}", text)
    text = _TOKEN.sub(lambda m: f"<token:{len(m.group(0))}>", text)
    text = _PHONE.sub(_mask_phone, text)
    return _BARE_DIGITS.sub(_mask_bare, text)


def mask_value(value: Any) -> Any:
    """Mask strings inside a value, recursing into dicts, lists and tuples."""
    if isinstance(value, str):
        return mask(value)
    if isinstance(value, dict):
        return {k: mask_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(mask_value(v) for v in value)
    return value


def mask_address(address: str) -> str:
    """A contact shown to an operator: enough to recognise it, not enough to use it."""
    if "@" in address:
        local, _, domain = address.rpartition("@")
        return f"{local[:1]}***@{domain}"
    if len(address) <= 4:
        return "*" * len(address)
    return f"{address[:3]}…{address[-2:]}"


class MaskingFilter(logging.Filter):
    """Masks a record in place; never drops one."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "_herald_masked", False):
            return True
        try:
            message = record.getMessage()
        except Exception:  # a bad format string still gets logged, masked
            message = f"{record.msg!r} {record.args!r}"
        record.msg = mask(message)
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = mask(record.exc_text)
        if record.stack_info:
            record.stack_info = mask(record.stack_info)
        for key, value in list(vars(record).items()):
            if key not in _STANDARD:
                setattr(record, key, mask_value(value))
        record._herald_masked = True
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, service, logger, message, extras, exc."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "service": self.service,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                out[key] = value
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            out["exc"] = record.exc_text
        return json.dumps(out, default=str, ensure_ascii=False)


def configure_logging(service: str, level: str = "INFO", stream: IO[str] | None = None) -> None:
    """Route every logger to one masked JSON handler on stderr (or `stream`)."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter(service))
    handler.addFilter(MaskingFilter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    # Servers and clients with their own handlers would bypass the mask otherwise.
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "hypercorn.error", "faust"):
        lib = logging.getLogger(name)
        lib.handlers.clear()
        lib.propagate = True
