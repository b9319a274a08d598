"""Checking and previewing templates before they are saved: shared by the template API and
CLI, with the same Jinja2 sandbox settings as the processor's renderer (processors/render.py),
so what passes here renders there.

A template has declared parameters and variants, one per (channel, locale). `check`
raises `ValidationError` naming the field at fault (`variants[1].subject`, `params`);
its estimates (SMS segments, push payload bytes) are made on the variant rendered with the
template's example values, since the real lengths depend on the parameters.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from jinja2 import StrictUndefined, TemplateError, TemplateSyntaxError, meta
from jinja2.sandbox import SandboxedEnvironment

from schemas.validation import ValidationError, has_line_break

_TEXT = SandboxedEnvironment(undefined=StrictUndefined, autoescape=False)
_HTML = SandboxedEnvironment(undefined=StrictUndefined, autoescape=True)

CHANNELS = ("push", "sms", "email", "inapp")
# What the processor gives the template of a digest (processors/digests.py): how many
# requests it collects, the first of them (each with `params`, `created_at`, `event_id`),
# and its key. A template reads them without declaring them.
DIGEST_NAMES = frozenset({"count", "items", "digest_key"})
FIELDS = ("title", "subject", "body", "html")
# APNs refuses a payload over 4096 bytes (FCM's limit, 4000, applies to the data part).
PUSH_MAX_BYTES = 4096
# Carriers concatenate at most about 10 parts reliably; Twilio's own cap is 1600 characters.
SMS_MAX_SEGMENTS = 10

# GSM 03.38: one septet each, or two for the extension table (ESC + char).
_GSM7_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
_GSM7_EXTENDED = frozenset("^{}\\[~]|€\f")


@dataclass(frozen=True)
class Variant:
    channel: str
    locale: str
    title: str | None = None
    subject: str | None = None
    body: str | None = None
    html: str | None = None

    def as_dict(self) -> dict[str, str | None]:
        return asdict(self)


@dataclass(frozen=True)
class SmsLength:
    encoding: str  # GSM-7 | UCS-2
    units: int  # septets (GSM-7) or UTF-16 code units (UCS-2)
    segments: int


def sms_length(text: str) -> SmsLength:
    """Segments a carrier bills for `text`: 160 septets in one GSM-7 part or 153 per part
    of a concatenated message (the rest is the UDH), 70 / 67 UTF-16 units in UCS-2."""
    if all(c in _GSM7_BASIC or c in _GSM7_EXTENDED for c in text):
        units = sum(2 if c in _GSM7_EXTENDED else 1 for c in text)
        single, multi, encoding = 160, 153, "GSM-7"
    else:
        units = len(text.encode("utf-16-le")) // 2
        single, multi, encoding = 70, 67, "UCS-2"
    segments = 1 if units <= single else math.ceil(units / multi)
    return SmsLength(encoding, units, segments)


def push_payload_bytes(title: str | None, body: str | None) -> int:
    """Size of the APNs alert payload the push senders build from a title and body."""
    alert = {k: v for k, v in (("title", title), ("body", body)) if v is not None}
    return len(json.dumps({"aps": {"alert": alert}}, ensure_ascii=False).encode())


def used_params(source: str, *, html: bool = False) -> frozenset[str]:
    """Names the template reads; raises TemplateSyntaxError."""
    env = _HTML if html else _TEXT
    return frozenset(meta.find_undeclared_variables(env.parse(source)))


def render_variant(variant: Variant, params: Mapping[str, Any]) -> Variant:
    """The variant rendered as the processor renders it (raises jinja2.TemplateError)."""
    out: dict[str, str | None] = {}
    for name in FIELDS:
        source = getattr(variant, name)
        env = _HTML if name == "html" else _TEXT
        out[name] = None if source is None else env.from_string(source).render(params)
    return Variant(variant.channel, variant.locale, **out)


def parse_variants(data: object) -> list[Variant]:
    """Variants from JSON, checking shape only (`check` checks content)."""
    if not isinstance(data, list) or not data:
        raise ValidationError("variants", "a non-empty array of {channel, locale, ...}")
    out = []
    for i, item in enumerate(data):
        where = f"variants[{i}]"
        if not isinstance(item, dict):
            raise ValidationError(where, "must be an object")
        unknown = set(item) - {"channel", "locale", *FIELDS}
        if unknown:
            raise ValidationError(f"{where}.{sorted(unknown)[0]}", "unknown field")
        if item.get("channel") not in CHANNELS:
            raise ValidationError(f"{where}.channel", f"must be one of {', '.join(CHANNELS)}")
        for name in ("locale", *FIELDS):
            value = item.get(name)
            if value is not None and not isinstance(value, str):
                raise ValidationError(f"{where}.{name}", "must be a string")
        if not item.get("locale"):
            raise ValidationError(f"{where}.locale", "required, e.g. en or ko-KR")
        out.append(Variant(**item))
    return out


def check(
    params: Sequence[str], examples: Mapping[str, str], variants: Sequence[Variant]
) -> list[dict[str, object]]:
    """Validate a template version; returns per-variant estimates (SMS segments, push
    bytes) for the caller to show. Raises `ValidationError` naming the first fault."""
    declared = set(params)
    if len(declared) != len(params):
        raise ValidationError("params", "a parameter is declared twice")
    for name in examples:
        if name not in declared:
            raise ValidationError(f"examples.{name}", "not a declared parameter")
    seen: set[tuple[str, str]] = set()
    used_anywhere: set[str] = set()
    estimates: list[dict[str, object]] = []
    for i, v in enumerate(variants):
        where = f"variants[{i}]"
        if (v.channel, v.locale) in seen:
            raise ValidationError(where, f"a second {v.channel} variant for locale {v.locale}")
        seen.add((v.channel, v.locale))
        _required(v, where)
        for name in FIELDS:
            source = getattr(v, name)
            if source is None:
                continue
            try:
                used = used_params(source, html=name == "html")
            except TemplateSyntaxError as exc:
                raise ValidationError(
                    f"{where}.{name}", f"template syntax error on line {exc.lineno}: {exc.message}"
                ) from None
            # A digest template reads what herald gives it (count, items) undeclared.
            undeclared = sorted(used - declared - DIGEST_NAMES)
            if undeclared:
                raise ValidationError(
                    f"{where}.{name}", f"uses {undeclared[0]!r}, which is not in params"
                )
            if name in ("title", "subject") and has_line_break(source):
                raise ValidationError(f"{where}.{name}", "a header: no line breaks")
            used_anywhere |= used
        sample: dict[str, Any] = {p: examples.get(p, p) for p in declared}
        sample.update(digest_sample(sample, declared))
        try:
            rendered = render_variant(v, sample)
        except TemplateError as exc:
            raise ValidationError(where, f"does not render with the examples: {exc}") from None
        estimates.append(_estimate(rendered, where))
    unused = sorted(declared - used_anywhere)
    if unused:
        raise ValidationError(f"params.{unused[0]}", "declared but used by no variant")
    return estimates


class _AnyParam(dict[str, str]):
    """An example item's parameters: every name reads as itself."""

    def __missing__(self, key: str) -> str:
        return key


def digest_sample(sample: Mapping[str, str], declared: set[str]) -> dict[str, Any]:
    """Example values of the digest names a template reads without declaring them."""
    items = [
        {"event_id": f"example-{i}", "created_at": 0, "params": _AnyParam(sample)} for i in (1, 2)
    ]
    given = {"count": len(items), "items": items, "digest_key": "example"}
    return {k: v for k, v in given.items() if k not in declared}


def _required(v: Variant, where: str) -> None:
    needed = {
        "email": ("subject", "body", "html"),
        "push": ("body",),
        "sms": ("body",),
        "inapp": ("body",),
    }
    for name in needed[v.channel]:
        if not (getattr(v, name) or "").strip():
            text = "the plain-text part" if name == "body" and v.channel == "email" else name
            raise ValidationError(f"{where}.{name}", f"{v.channel} needs {text}")
    extra = {
        "email": ("title",),
        "push": ("subject", "html"),
        "sms": ("title", "subject", "html"),
        "inapp": ("subject", "html"),
    }
    for name in extra[v.channel]:
        if getattr(v, name) is not None:
            raise ValidationError(f"{where}.{name}", f"not used by {v.channel}")


def _estimate(rendered: Variant, where: str) -> dict[str, object]:
    out: dict[str, object] = {"channel": rendered.channel, "locale": rendered.locale}
    if rendered.channel == "sms":
        length = sms_length(rendered.body or "")
        if length.segments > SMS_MAX_SEGMENTS:
            raise ValidationError(
                f"{where}.body",
                f"{length.segments} {length.encoding} segments with the examples "
                f"({length.units} units); at most {SMS_MAX_SEGMENTS}",
            )
        out.update(sms_encoding=length.encoding, sms_segments=length.segments)
    elif rendered.channel == "push":
        size = push_payload_bytes(rendered.title, rendered.body)
        if size > PUSH_MAX_BYTES:
            raise ValidationError(
                f"{where}.body",
                f"push payload of {size} bytes with the examples; at most {PUSH_MAX_BYTES}",
            )
        out["push_bytes"] = size
    return out
