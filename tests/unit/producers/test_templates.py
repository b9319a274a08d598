"""Template bodies from JSON, pinned references and preview (no Cassandra)."""

from __future__ import annotations

import pytest

from producers.templates import (
    Version,
    parse_digest_declaration,
    parse_version_body,
    preview,
    split_ref,
)
from schemas.templating import Variant
from schemas.validation import ValidationError

BODY = {
    "params": ["order"],
    "examples": {"order": "8812"},
    "variants": [
        {"channel": "sms", "locale": "en", "body": "Order {{ order }}"},
        {"channel": "sms", "locale": "ko", "body": "주문 {{ order }}"},
        {"channel": "push", "locale": "en", "title": "Shipped", "body": "Order {{ order }}"},
    ],
}


def test_body_is_parsed_and_checked() -> None:
    params, examples, variants, description = parse_version_body(BODY)
    assert params == ["order"] and examples == {"order": "8812"} and description is None
    assert variants[1] == Variant("sms", "ko", body="주문 {{ order }}")


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"variants": []}, "variants"),
        ({"variants": [{"channel": "fax", "locale": "en"}]}, "variants[0].channel"),
        ({"variants": [{"channel": "sms", "locale": "e n", "body": "x"}]}, "variants[0].locale"),
        ({"params": ["bad name"]}, "params[0]"),
        ({"colour": "red"}, "colour"),
    ],
)
def test_bad_bodies_name_the_field(change: dict[str, object], field: str) -> None:
    with pytest.raises(ValidationError) as info:
        parse_version_body({**BODY, **change})
    assert info.value.field == field


def test_split_ref() -> None:
    assert split_ref("order_shipped") == ("order_shipped", None)
    assert split_ref("order_shipped@3") == ("order_shipped", 3)
    with pytest.raises(ValidationError):
        split_ref("order_shipped@latest")


def test_preview_picks_the_locale_or_its_language_and_renders() -> None:
    params, examples, variants, _ = parse_version_body(BODY)
    version = Version("t", 2, params, examples, variants, None, None, None)
    out = preview(version, "ko-KR", {"order": "77"})
    assert out["version"] == 2
    assert out["channels"]["sms"]["body"] == "주문 77"
    assert out["channels"]["sms"]["sms_encoding"] == "UCS-2"
    assert out["channels"]["push"]["body"] == "Order 77"  # no ko push: the first variant
    assert "email" not in out["channels"]
    assert preview(version, "en", {})["channels"]["sms"]["body"] == "Order 8812"


def test_a_declared_digest_is_parsed_and_checked() -> None:
    body = {**BODY, "digest": {"key": "orders", "window": "15m", "template_id": "orders_digest"}}
    assert parse_digest_declaration(body) == {
        "key": "orders",
        "window_s": 900,
        "template_id": "orders_digest",
    }
    assert parse_digest_declaration(BODY) is None
    parse_version_body(body)  # an allowed field
    for bad, field in (
        ({"key": "orders", "window": "soon"}, "digest.window"),
        ({"key": "Orders", "window": "1h"}, "digest.key"),
        ({"window": "1h"}, "digest.key"),
        ({"key": "orders", "window": "1h", "template_id": "Bad Id"}, "template_id"),
    ):
        with pytest.raises(ValidationError) as info:
            parse_digest_declaration({**BODY, "digest": bad})
        assert info.value.field == field


def test_a_digest_template_previews_with_example_items() -> None:
    body = {
        "params": [],
        "variants": [
            {
                "channel": "inapp",
                "locale": "en",
                "body": "{{ count }}: {% for i in items %}{{ i.params.who }} {% endfor %}",
            }
        ],
    }
    params, examples, variants, _ = parse_version_body(body)
    version = Version("d", 1, params, examples, variants, None, None, None)
    assert preview(version, "en", {})["channels"]["inapp"]["body"] == "2: who who "
